"""The tree of a GNU --listed-incremental chain, checked against real GNU tar.

A temp dir goes through a full and two incrementals (a file changed at each
level, a file deleted, a directory added, one removed, one renamed, a symlink,
a hard link); after each level the tree computed from the headers must equal
what `tar -x --listed-incremental=/dev/null` of the chain so far leaves on disk,
and the content a second pass hands out must be that level's bytes.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vkbackup.errors import IntegrityError
from vkbackup.restore.tartree import (
    DIR,
    FILE,
    HARDLINK,
    SYMLINK,
    Entry,
    IterReader,
    LevelTar,
    Tree,
    build,
    content,
    norm,
    open_tar,
    tar_stream,
)


def gnu_tar(src: Path, snar: Path, out: Path) -> None:
    subprocess.run(
        ["tar", "-cf", str(out), "--numeric-owner", "-p", f"--listed-incremental={snar}", "."],
        cwd=src,
        check=True,
    )


def extract(levels: list[Path], dest: Path) -> None:
    dest.mkdir()
    for lv in levels:
        subprocess.run(
            ["tar", "-xpf", str(lv), "--numeric-owner", "--listed-incremental=/dev/null"],
            cwd=dest,
            check=True,
        )


def on_disk(root: Path) -> dict[str, dict[str, Any]]:
    """Every path below *root*: type, mode, owner, size, mtime, link target."""
    out: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = DIR if p.is_dir() and not p.is_symlink() else FILE
            if p.is_symlink():
                kind = SYMLINK
            rec: dict[str, Any] = {
                "type": kind,
                "mode": st.st_mode & 0o7777,
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime": int(st.st_mtime),
            }
            if kind == FILE:
                rec["size"] = st.st_size
            if kind == SYMLINK:
                rec["link"] = os.readlink(p)
            out[str(p.relative_to(root))] = rec
    return out


def in_tree(tree: Tree) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for e in tree.below(""):
        if not e.path:
            continue
        kind = FILE if e.type == HARDLINK else e.type
        rec: dict[str, Any] = {
            "type": kind,
            "mode": e.mode,
            "uid": e.uid,
            "gid": e.gid,
            "mtime": e.mtime,
        }
        if kind == FILE:
            rec["size"] = e.size
        if kind == SYMLINK:
            rec["link"] = e.link
        out[e.path] = rec
    return out


def opener(levels: list[Path]) -> Any:
    def open_level(level: int) -> LevelTar:
        f = levels[level].open("rb")
        return LevelTar(open_tar(f), f.close)

    return open_level


def tree_of(levels: list[Path]) -> Tree:
    files = [p.open("rb") for p in levels]
    try:
        return build(((i, open_tar(f)) for i, f in enumerate(files)), "test")
    finally:
        for f in files:
            f.close()


def read_file(tree: Tree, levels: list[Path], path: str) -> bytes:
    e = tree.entries[norm(path)]
    return b"".join(data.read() for _, data in content([e], opener(levels)))


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[Path, list[Path], list[dict[str, bytes]]]]:
    """(source dir, [level0.tar, level1.tar, level2.tar], the changed files' bytes per level)"""
    src = tmp_path / "src"
    src.mkdir()
    snar = tmp_path / "state.snar"
    (src / "changed.txt").write_bytes(b"version 0\n")
    (src / "gone.txt").write_bytes(b"deleted at level 1\n")
    (src / "keep.bin").write_bytes(os.urandom(3000))
    os.chmod(src / "keep.bin", 0o640)
    (src / "old").mkdir()
    (src / "old" / "inner.txt").write_bytes(b"inside old\n")
    (src / "moving").mkdir()
    (src / "moving" / "m.txt").write_bytes(b"moved along\n")
    (src / "link").symlink_to("changed.txt")
    (src / "abs-link").symlink_to("/etc/hostname")
    (src / "hard.txt").write_bytes(b"two names\n")
    os.link(src / "hard.txt", src / "hard2.txt")
    os.chown(src / "keep.bin", 1234, 4321)
    levels = [tmp_path / f"level{i}.tar" for i in range(3)]
    data: list[dict[str, bytes]] = [{"changed.txt": b"version 0\n"}]
    gnu_tar(src, snar, levels[0])
    time.sleep(1.1)
    # level 1: content changes, a file deleted, a directory added, one renamed
    (src / "changed.txt").write_bytes(b"version one, longer\n")
    (src / "gone.txt").unlink()
    (src / "new").mkdir()
    (src / "new" / "sub").mkdir()
    (src / "new" / "sub" / "deep.txt").write_bytes(b"deep\n")
    os.chmod(src / "new" / "sub", 0o750)
    (src / "moving").rename(src / "moved")
    data.append({"changed.txt": b"version one, longer\n"})
    gnu_tar(src, snar, levels[1])
    time.sleep(1.1)
    # level 2: changed again, a directory removed, a file under a new dir changed
    (src / "changed.txt").write_bytes(b"v2\n")
    for p in (src / "old").iterdir():
        p.unlink()
    (src / "old").rmdir()
    (src / "new" / "sub" / "deep.txt").write_bytes(b"deeper now\n")
    (src / "new" / "added.txt").write_bytes(b"added at 2\n")
    data.append({"changed.txt": b"v2\n"})
    gnu_tar(src, snar, levels[2])
    yield src, levels, data


def test_tarfile_hands_out_gnu_dumpdir_data(chain: Any) -> None:
    _, levels, _ = chain
    with levels[1].open("rb") as f:
        tf = open_tar(f)
        dumpdirs = {}
        for ti in tf:
            if ti.type == b"D":
                fobj = tf.extractfile(ti)
                assert fobj is not None
                dumpdirs[norm(ti.name)] = fobj.read()
    root = dumpdirs[""].split(b"\0")
    assert b"Nkeep.bin" in root and b"Ychanged.txt" in root and b"Dnew" in root
    assert not any(x.endswith(b"gone.txt") for x in root)
    # the names are the members' own, not joined to GNU's atime/ctime fields
    assert "new/sub" in dumpdirs


@pytest.mark.parametrize("upto", [0, 1, 2])
def test_tree_after_each_level_equals_real_extraction(
    chain: Any, tmp_path: Path, upto: int
) -> None:
    _, levels, data = chain
    real = tmp_path / f"real{upto}"
    extract(levels[: upto + 1], real)
    tree = tree_of(levels[: upto + 1])
    assert in_tree(tree) == on_disk(real)
    # the changed file's content is that level's
    assert read_file(tree, levels[: upto + 1], "changed.txt") == data[upto]["changed.txt"]
    assert read_file(tree, levels[: upto + 1], "./hard2.txt") == b"two names\n"
    if upto >= 1:
        assert tree.entries["changed.txt"].level == upto
        assert tree.entries["keep.bin"].level == 0
        assert "gone.txt" not in tree.entries and "moving" not in tree.entries
        assert read_file(tree, levels[: upto + 1], "moved/m.txt") == b"moved along\n"
    if upto == 2:
        assert not any(p == "old" or p.startswith("old/") for p in tree.entries)


@pytest.mark.parametrize("directory", ["new", "", "moved"])
def test_dump_of_a_directory_extracts_like_the_real_one(
    chain: Any, tmp_path: Path, directory: str
) -> None:
    _, levels, _ = chain
    real = tmp_path / "real"
    extract(levels, real)
    tree = tree_of(levels)
    selected = tree.below(directory)
    out = tmp_path / "dumped"
    out.mkdir()
    data = b"".join(tar_stream(selected, opener(levels)))
    subprocess.run(["tar", "-xpf", "-", "--numeric-owner"], input=data, cwd=out, check=True)
    want = {k: v for k, v in on_disk(real).items() if not directory or k.startswith(directory)}
    assert on_disk(out) == want
    for rel in want:
        if want[rel]["type"] == FILE:
            assert (out / rel).read_bytes() == (real / rel).read_bytes()
    if not directory:  # the two names of one inode stay one inode
        assert (out / "hard.txt").stat().st_ino == (out / "hard2.txt").stat().st_ino


def test_generated_tar_reads_back_as_a_stream(chain: Any) -> None:
    _, levels, _ = chain
    tree = tree_of(levels)
    reader = IterReader(tar_stream(tree.below("new"), opener(levels)))
    with tarfile.open(fileobj=reader, mode="r|") as tf:  # type: ignore[call-overload]
        names = [ti.name for ti in tf]
    # contents first, directories last and deepest first (see tar_stream)
    assert names[-2:] == ["new/sub", "new"]
    assert {"new/sub/deep.txt", "new/added.txt"} <= set(names)


def test_a_member_that_moved_between_passes_is_refused(chain: Any, tmp_path: Path) -> None:
    _, levels, _ = chain
    tree = tree_of(levels)
    e = tree.entries["changed.txt"]
    empty = tmp_path / "empty.tar"
    tarfile.open(empty, "w").close()
    # level 2 is not what pass 1 read: another tar, or one that ends before the member
    for other in (levels[1], empty):
        with pytest.raises(IntegrityError):
            list(content([e], opener([levels[0], levels[1], other])))


def test_norm() -> None:
    assert norm("./a/b/") == "a/b"
    assert norm("/etc/x") == "etc/x"
    assert norm(".") == norm("/") == norm("./") == ""
    assert norm("a/../../b") == "b"


# -- hard links, renames, the children index ------------------------------------------


def full_and_incremental(tmp_path: Path, src: Path, change: Any) -> list[Path]:
    """Level 0 of *src*, then *change*(src), then level 1 (real GNU tar)."""
    snar = tmp_path / "state.snar"
    levels = [tmp_path / "level0.tar", tmp_path / "level1.tar"]
    gnu_tar(src, snar, levels[0])
    time.sleep(1.1)
    change(src)
    gnu_tar(src, snar, levels[1])
    return levels


def check_with_gnu_tar(data: bytes, out: Path) -> list[str]:
    """List the generated tar with `tar -t` and extract it with `tar -x` (both must
    succeed); return the names `tar -t` lists."""
    listed = subprocess.run(["tar", "-tf", "-"], input=data, capture_output=True, check=True)
    out.mkdir()
    subprocess.run(["tar", "-xpf", "-", "--numeric-owner"], input=data, cwd=out, check=True)
    return listed.stdout.decode().splitlines()


def test_a_hard_link_selected_without_its_target_is_written_as_a_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "x").mkdir(parents=True)
    (src / "y").mkdir()
    (src / "x" / "f").write_bytes(b"shared content\n" * 100)
    os.link(src / "x" / "f", src / "y" / "g")
    level = tmp_path / "level0.tar"
    gnu_tar(src, tmp_path / "state.snar", level)
    tree = tree_of([level])
    assert tree.entries["y/g"].type == HARDLINK  # the tar holds x/f first
    data = b"".join(tar_stream(tree.below("y"), opener([level])))
    assert check_with_gnu_tar(data, tmp_path / "out") == ["y/g", "y/"]
    assert (tmp_path / "out" / "y" / "g").read_bytes() == b"shared content\n" * 100


def test_a_hard_link_that_sorts_before_its_target_carries_the_content(tmp_path: Path) -> None:
    # a tar whose file is d/b and whose hard link d/a sorts first in the selection
    level = tmp_path / "files.tar"
    with tarfile.open(level, "w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo("d")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(d)
        body = b"the content\n"
        f = tarfile.TarInfo("d/b")
        f.size, f.mode = len(body), 0o640
        tf.addfile(f, io.BytesIO(body))
        link = tarfile.TarInfo("d/a")
        link.type, link.linkname, link.mode = tarfile.LNKTYPE, "d/b", 0o640
        tf.addfile(link)
    tree = tree_of([level])
    selected = tree.below("d")
    assert [e.path for e in selected] == ["d", "d/a", "d/b"]
    data = b"".join(tar_stream(selected, opener([level])))
    assert sorted(check_with_gnu_tar(data, tmp_path / "out")) == ["d/", "d/a", "d/b"]
    out = tmp_path / "out" / "d"
    assert (out / "a").read_bytes() == (out / "b").read_bytes() == b"the content\n"
    assert (out / "a").stat().st_ino == (out / "b").stat().st_ino


def test_a_hard_link_whose_target_was_replaced_later_keeps_the_old_content(
    tmp_path: Path,
) -> None:
    # GNU tar dumps the link again once its target is replaced (its inode's ctime
    # changed), so the chain is made by hand: level 1 holds only the new f
    levels = [tmp_path / "level0.tar", tmp_path / "level1.tar"]
    members: list[list[tuple[str, bytes | str]]] = [
        [("f", b"old content\n"), ("g", "f")],
        [("f", b"new content, longer\n")],
    ]
    for path, level in zip(levels, members, strict=True):
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
            for name, what in level:
                ti = tarfile.TarInfo(name)
                ti.mode, ti.mtime = 0o644, 1_700_000_000
                if isinstance(what, str):
                    ti.type, ti.linkname = tarfile.LNKTYPE, what
                    tf.addfile(ti)
                else:
                    ti.size = len(what)
                    tf.addfile(ti, io.BytesIO(what))
    real = tmp_path / "real"
    real.mkdir()
    for lv in levels:  # tar -x replaces f by a new file: g keeps the old inode
        subprocess.run(["tar", "-xpf", str(lv), "--numeric-owner"], cwd=real, check=True)
    tree = tree_of(levels)
    assert tree.entries["g"].type == HARDLINK and tree.entries["g"].level == 0
    assert in_tree(tree) == on_disk(real)
    data = b"".join(tar_stream(tree.below(""), opener(levels)))
    assert sorted(check_with_gnu_tar(data, tmp_path / "out")) == ["f", "g"]
    assert on_disk(tmp_path / "out") == on_disk(real)
    assert (tmp_path / "out" / "f").read_bytes() == b"new content, longer\n"
    assert (tmp_path / "out" / "g").read_bytes() == b"old content\n"


def test_a_hard_link_to_a_symlink_is_that_symlink_again(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "s").symlink_to("somewhere/else")
    os.link(src / "s", src / "s2", follow_symlinks=False)
    (src / "plain").write_bytes(b"x\n")
    level = tmp_path / "level0.tar"
    gnu_tar(src, tmp_path / "state.snar", level)
    real = tmp_path / "real"
    extract([level], real)
    tree = tree_of([level])
    assert in_tree(tree) == on_disk(real)
    assert tree.entries["s2"].type == SYMLINK and tree.entries["s2"].link == "somewhere/else"
    data = b"".join(tar_stream(tree.below(""), opener([level])))
    check_with_gnu_tar(data, tmp_path / "out")
    assert on_disk(tmp_path / "out") == on_disk(real)


def test_swapping_two_directories_is_applied_as_gnu_tar_does(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for d, inner in (("p", "pp"), ("q", "qq")):
        (src / d).mkdir(parents=True)
        (src / d / inner).write_bytes(f"in {d}\n".encode())
    (src / "r").write_bytes(b"r\n")

    def swap(src: Path) -> None:
        (src / "p").rename(src / "t")
        (src / "q").rename(src / "p")
        (src / "t").rename(src / "q")

    levels = full_and_incremental(tmp_path, src, swap)
    with levels[1].open("rb") as f:  # GNU tar records it through its temporary directory
        tf = open_tar(f)
        root = next(ti for ti in tf if ti.type == b"D" and norm(ti.name) == "")
        fobj = tf.extractfile(root)
        assert fobj is not None
        listing = fobj.read().split(b"\0")
    assert any(x.startswith(b"X") for x in listing) and b"R" in listing and b"T" in listing
    real = tmp_path / "real"
    extract(levels, real)
    tree = tree_of(levels)
    assert in_tree(tree) == on_disk(real)
    assert set(in_tree(tree)) == {"p", "p/qq", "q", "q/pp", "r"}
    assert read_file(tree, levels, "p/qq") == b"in q\n"
    assert read_file(tree, levels, "q/pp") == b"in p\n"


class CountingDict(dict[str, Any]):
    """A dict that counts walks over all its keys or items."""

    scans = 0

    def __iter__(self) -> Iterator[str]:
        CountingDict.scans += 1
        return super().__iter__()

    def items(self) -> Any:
        CountingDict.scans += 1
        return super().items()

    def keys(self) -> Any:
        CountingDict.scans += 1
        return super().keys()

    def values(self) -> Any:
        CountingDict.scans += 1
        return super().values()


def test_applying_a_chain_never_scans_every_entry(chain: Any, tmp_path: Path) -> None:
    """A dumpdir per directory, a replace per file: each must cost what it touches,
    not the whole tree (it was quadratic: 30 s for 55k entries)."""
    _, levels, _ = chain
    files = [p.open("rb") for p in levels]
    try:
        tree = Tree(entries=CountingDict())
        CountingDict.scans = 0
        for i, f in enumerate(files):
            tree.apply(i, open_tar(f), "test")
        assert CountingDict.scans == 0
        assert in_tree(tree) == in_tree(tree_of(levels))
        assert tree.below("moved") and "gone.txt" not in tree.entries
    finally:
        for f in files:
            f.close()


def test_implicit_parents_come_and_go_with_what_they_hold() -> None:
    tree = Tree()
    e = Entry("a/b/c", FILE, 0o644, 0, 0, 1, 0, level=0, ordinal=0, member="a/b/c")
    tree._put("a/b/c", e)
    assert [x.path for x in tree.below("a")] == ["a/b/c"] and tree.children("") == ["a"]
    tree.remove("a/b/c")
    assert tree.below("a") == [] and tree.kids == {}
    tree._put("a/b/c", e)
    tree._put("a", Entry("a", SYMLINK, 0o777, 0, 0, 0, 0, link="x"))
    assert [x.path for x in tree.below("")] == ["a"]
