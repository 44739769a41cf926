"""The tree of a GNU --listed-incremental chain, checked against real GNU tar.

A temp dir goes through a full and two incrementals (a file changed at each
level, a file deleted, a directory added, one removed, one renamed, a symlink,
a hard link); after each level the tree computed from the headers must equal
what `tar -x --listed-incremental=/dev/null` of the chain so far leaves on disk,
and the content a second pass hands out must be that level's bytes.
"""

from __future__ import annotations

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
