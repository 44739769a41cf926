"""The tar guard: hostile archives are refused (naming the object and the member)
before the header that makes them hostile is passed on; benign ones, including
everything GNU tar writes for the lab's nasty-but-legal volume and GNU incremental
archives, pass through byte for byte."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.tarcraft import (
    ChunkedReader,
    Entry,
    end_blocks,
    gnu_tar,
    nasty_tree,
    padded,
    patched,
    raw_header,
    with_tarfile,
)
from vkbackup.errors import IntegrityError
from vkbackup.restore.objects import DecodingReader, Gunzip
from vkbackup.restore.targuard import GuardState, TarGuard, check_tar
from vkbackup.streams import BytesReader, iter_chunks

KEY = "data/prod/20261126T020000Z-abcd/vol/volume.tar.gz.age"


def passes(data: bytes, sizes: tuple[int, ...] = (1 << 20,), **kw: object) -> bytes:
    guard = TarGuard(ChunkedReader(data, sizes), KEY, **kw)  # type: ignore[arg-type]
    out = b"".join(iter_chunks(guard, 1 << 20))
    assert out == data
    return out


def refused(data: bytes, sizes: tuple[int, ...] = (1 << 20,), **kw: object) -> IntegrityError:
    with pytest.raises(IntegrityError) as info:
        passes(data, sizes, **kw)
    assert KEY in str(info.value)
    return info.value


# -- hostile archives ------------------------------------------------------------------

HOSTILE: dict[str, tuple[list[Entry], str, str]] = {
    "absolute name": ([Entry("/etc/cron.d/evil", data=b"x")], "/etc/cron.d/evil", "absolute"),
    "dotdot name": ([Entry("a/../../etc/passwd", data=b"x")], "a/../../etc/passwd", "'..'"),
    "symlink out": (
        [Entry("sub/out", "symlink", link="../../etc")],
        "sub/out",
        "climbs out of the archive root",
    ),
    "absolute symlink (strict)": (
        [Entry("l", "symlink", link="/etc/shadow")],
        "'l'",
        "absolute path",
    ),
    "symlink chain out": (
        # each link alone stays inside; sub/up/.. is the root's parent
        [
            Entry("sub", "dir"),
            Entry("sub/up", "symlink", link=".."),
            Entry("x", "symlink", link="sub/up/.."),
        ],
        "'x'",
        "itself a symlink in this archive",
    ),
    "symlink chain out, other order": (
        [
            Entry("sub", "dir"),
            Entry("x", "symlink", link="sub/up/.."),
            Entry("sub/up", "symlink", link=".."),
        ],
        "sub/up",
        "climbs with '..' out of this path",
    ),
    "write through a symlink": (
        [Entry("evil", "symlink", link="sub"), Entry("evil/passwd", data=b"root::0:0")],
        "evil/passwd",
        "lies below 'evil', a symlink",
    ),
    "hardlink absolute": (
        [Entry("h", "hardlink", link="/etc/shadow")],
        "'h'",
        "hard link to an absolute path",
    ),
    "hardlink dotdot": (
        [Entry("h", "hardlink", link="../../etc/shadow")],
        "'h'",
        "has a '..' component",
    ),
    "hardlink through a symlink": (
        [Entry("s", "symlink", link="d"), Entry("h", "hardlink", link="s/shadow")],
        "'h'",
        "lies below 's'",
    ),
    "char device": ([Entry("dev/mem", "chr")], "dev/mem", "character device"),
    "block device": ([Entry("dev/sda", "blk")], "dev/sda", "block device"),
    "fifo": ([Entry("run/pipe", "fifo")], "run/pipe", "FIFO"),
    "pax path override": (
        [Entry("innocent.txt", data=b"x", pax={"path": "../../root/.ssh/authorized_keys"})],
        "authorized_keys",
        "'..'",
    ),
    "pax linkpath override": (
        [Entry("l", "symlink", link="fine", pax={"linkpath": "../../../etc"})],
        "'l'",
        "climbs out",
    ),
    "pax sparse name": (
        [Entry("innocent", data=b"x", pax={"GNU.sparse.name": "/etc/passwd"})],
        "/etc/passwd",
        "absolute",
    ),
    "GNU long name with dotdot": (
        [Entry("a" * 150 + "/../../../etc/passwd", data=b"x")],
        "etc/passwd",
        "'..'",
    ),
    "GNU long link target out": (
        [Entry("l", "symlink", link="../" * 60 + "etc")],
        "'l'",
        "climbs out",
    ),
}


@pytest.mark.parametrize(
    ("case", "fmt"),
    [
        (case, fmt)
        for case in sorted(HOSTILE)
        for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT)
        if fmt == tarfile.PAX_FORMAT or "pax" not in case  # pax headers need the pax format
    ],
)
def test_hostile_tar_is_refused_naming_object_and_member(case: str, fmt: int) -> None:
    entries, member, why = HOSTILE[case]
    benign = [Entry("ok.txt", data=b"fine\n" * 300)]
    data = with_tarfile(benign + entries, fmt)
    err = refused(data)
    assert member in str(err) and why in str(err)
    # the same with one byte per read: headers split at every possible point
    err = refused(data, (1, 7, 511, 513))
    assert member in str(err)


def test_global_pax_header_path_is_checked() -> None:
    data = with_tarfile([Entry("a", data=b"x")], tarfile.PAX_FORMAT, {"path": "../../evil"})
    assert "'..'" in str(refused(data))


def test_files_source_refuses_members_outside_the_recorded_paths() -> None:
    allowed = ["/opt/app/.env", "/etc/caddy"]
    good = [
        Entry("opt/app/.env", data=b"K=V\n"),
        Entry("etc/caddy", "dir"),
        Entry("etc/caddy/Caddyfile", data=b"x"),
        Entry("etc/caddy/again", "hardlink", link="etc/caddy/Caddyfile"),
    ]
    passes(with_tarfile(good), allowed=allowed)
    err = refused(with_tarfile([*good, Entry("etc/cron.d/evil", data=b"x")]), allowed=allowed)
    assert "etc/cron.d/evil" in str(err) and "not one of the paths" in str(err)
    err = refused(
        with_tarfile([*good, Entry("opt/app/.env2", "hardlink", link="etc/shadow")]),
        allowed=[*allowed, "/opt/app/.env2"],
    )
    assert "etc/shadow" in str(err) and "is not a path this snapshot recorded" in str(err)
    # a recorded path that is a prefix of a name is not a directory of it
    refused(with_tarfile([Entry("opt/app/.envX", data=b"x")]), allowed=allowed)


def test_absolute_symlinks_allowed_for_volumes_but_never_written_through() -> None:
    data = with_tarfile([Entry("l", "symlink", link="/app/storage/x"), Entry("f", data=b"x")])
    passes(data, absolute_symlinks=True)
    err = refused(
        with_tarfile([Entry("l", "symlink", link="/etc"), Entry("l/cron.d/evil", data=b"x")]),
        absolute_symlinks=True,
    )
    assert "lies below 'l'" in str(err)
    # a hard link to a symlink is that symlink: no writing through it either
    err = refused(
        with_tarfile(
            [
                Entry("l", "symlink", link="/etc"),
                Entry("h", "hardlink", link="l"),
                Entry("h/passwd", data=b"x"),
            ]
        ),
        absolute_symlinks=True,
    )
    assert "lies below 'h'" in str(err)


def test_hostile_header_never_leaves_the_guard() -> None:
    """Read one byte at a time: what came out before the error ends before the
    hostile header's last byte, so `tar -x` downstream never sees that header."""
    ok_part = with_tarfile([Entry("ok.txt", data=os.urandom(5000))])
    ok_len = 512 + 5120  # header + padded data
    bad = raw_header(b"dev/kmem", b"3")
    data = ok_part[:ok_len] + bad + end_blocks()
    guard = TarGuard(ChunkedReader(data, (1,)), KEY)
    got = bytearray()
    with pytest.raises(IntegrityError) as info:
        while chunk := guard.read(1):
            got += chunk
    assert "dev/kmem" in str(info.value) and "character device" in str(info.value)
    assert len(got) == ok_len + 511
    # and the guard stays refused
    with pytest.raises(IntegrityError):
        guard.read(1)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (raw_header(b"a", b"0")[:148] + b"1234567\0" + raw_header(b"a", b"0")[156:], "checksum"),
        (raw_header(b"d/", b"5", size=512) + bytes(512) + end_blocks(), "claims 512 bytes"),
        (raw_header(b"l", b"2", size=10, link=b"x") + padded(b"x" * 10) + end_blocks(), "symlink"),
        (raw_header(b"h", b"1", size=3, link=b"x") + padded(b"abc") + end_blocks(), "hard link"),
        (raw_header(b"d/", b"\0", size=3) + padded(b"abc") + end_blocks(), "old-style directory"),
        (raw_header(b"m", b"M", size=0) + end_blocks(), "unsupported member type"),
        (
            raw_header(b"a", b"0", size=5) + padded(b"hello") + end_blocks() + b"\x01",
            "after the end",
        ),
        (raw_header(b"a", b"0", size=5) + padded(b"hello"), "ends before the end-of-archive"),
        (raw_header(b"a", b"0", size=5000) + b"hello", "ends before the end-of-archive"),
        (b"", "empty stream"),
        (raw_header(b"big", b"x", size=2 << 20), "extended header of"),
        (raw_header(b"p", b"x", size=9) + padded(b"8 path=a\n") + end_blocks(), "malformed pax"),
        (raw_header(b"p", b"x", size=8) + padded(b"3 x=abcd") + end_blocks(), "malformed pax"),
        (raw_header(b"L", b"L", size=2) + padded(b"a\0") + end_blocks(), "after an extended"),
        (patched(raw_header(b"n", b"0"), 124, b"0000000000-1") + end_blocks(), "bad size"),
        (patched(raw_header(b"n", b"0"), 124, b"\xff" * 12) + end_blocks(), "negative size"),
        (raw_header(b"d", b"D", size=9) + padded(b"Y../evil\0") + end_blocks(), "one plain name"),
        (raw_header(b"d", b"D", size=8) + padded(b"Ya/b\0\0\0\0") + end_blocks(), "one plain name"),
        (raw_header(b"d", b"D", size=14) + padded(b"R/etc\0T./x\0\0\0\0") + end_blocks(), "leaves"),
        (raw_header(b"d", b"D", size=4) + padded(b"Qabc") + end_blocks(), "dumpdir"),
        (raw_header(b"d", b"D", size=4) + padded(b"Yabc") + end_blocks(), "inside an entry"),
    ],
)
def test_malformed_structure_is_refused(data: bytes, why: str) -> None:
    if "checksum" in why:
        data = data + end_blocks()
    assert why in str(refused(data))


def test_base256_size_is_understood() -> None:
    data = patched(raw_header(b"n", b"0"), 124, b"\x80" + (700).to_bytes(11, "big"))
    passes(data + padded(b"z" * 700) + end_blocks())


def test_posix_prefix_is_part_of_the_name_but_not_for_gnu_headers() -> None:
    posix = raw_header(b"passwd", b"0", prefix=b"/etc") + end_blocks()
    assert "'/etc/passwd'" in str(refused(posix))
    # GNU headers keep atime/ctime where POSIX has the prefix: not a name
    gnu = raw_header(b"file", b"0", magic=b"ustar  \x00", prefix=b"/etc/junk") + end_blocks()
    passes(gnu)


# -- benign archives -------------------------------------------------------------------


@pytest.fixture(scope="module")
def nasty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nasty") / "vol"
    nasty_tree(root)
    return root


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_gnu_tar_of_the_nasty_but_legal_volume_passes_unchanged(nasty: Path, fmt: str) -> None:
    data = gnu_tar(nasty, f"--format={fmt}")
    listing = subprocess.run(
        ["tar", "-tvf", "-"], input=data, capture_output=True, check=True
    ).stdout.decode("utf-8", "replace")
    assert "absolute-link -> /app/storage/links/original.txt" in listing
    assert "link to" in listing  # hard links
    assert (b"GNUSparseFile" in data) == (fmt == "posix")  # pax sparse 1.0 vs GNU 'S'
    guard = TarGuard(BytesReader(data), KEY, absolute_symlinks=True)
    assert b"".join(iter_chunks(guard, 65536)) == data
    assert guard.members > 20
    passes(data, (1, 100, 4096, 7777), absolute_symlinks=True)
    # the strict default refuses its absolute links (by name)
    err = str(refused(data))
    assert "absolute-link" in err or "dangling-absolute" in err


def test_old_gnu_sparse_with_extension_blocks(nasty: Path) -> None:
    data = gnu_tar(nasty / "sparse", "--format=gnu")
    off = 512  # the "./" directory, then disk.img
    assert data[off + 156 : off + 157] == b"S" and data[off + 482] == 1  # extended
    passes(data, (1000,), absolute_symlinks=True)


def test_gzip_pipeline_of_gnu_tar_passes(nasty: Path) -> None:
    data = gnu_tar(nasty)
    gz = gzip.compress(data, compresslevel=1)
    out = b"".join(
        iter_chunks(
            TarGuard(DecodingReader(BytesReader(gz), Gunzip(KEY)), KEY, absolute_symlinks=True)
        )
    )
    assert out == data


def test_gnu_incremental_archives_pass(tmp_path: Path) -> None:
    src = tmp_path / "src"
    nasty_tree(src)
    snar = tmp_path / "snar"
    levels = []
    for step in range(3):
        levels.append(
            subprocess.run(
                ["tar", "-C", str(src), f"--listed-incremental={snar}", "-cf", "-",
                 "--numeric-owner", "-S", "-p", "."],
                check=True, capture_output=True,
            ).stdout
        )  # fmt: skip
        if step == 0:
            (src / "links" / "other" / "new.txt").write_text("new")
            shutil.rmtree(src / "empty")
            (src / "large").rename(src / "large-renamed")  # a 'R'/'T' rename in the dumpdir
        elif step == 1:
            (src / "odd names" / "with space.txt").unlink()
    assert all(lv[156:157] == b"D" for lv in levels)
    assert b"R./large\0T./large-renamed\0" in levels[1]
    for lv in levels:
        passes(lv, (3000,), absolute_symlinks=True)
    # and GNU tar restores the chain the guard passed
    out = tmp_path / "out"
    out.mkdir()
    for lv in levels:
        subprocess.run(
            ["tar", "-C", str(out), "--listed-incremental=/dev/null", "-xf", "-"],
            input=lv, check=True, capture_output=True,
        )  # fmt: skip
    assert (out / "large-renamed" / "blob.bin").exists() and not (out / "empty").exists()


def test_files_source_style_archive_passes_with_its_recorded_paths(nasty: Path) -> None:
    rel = [str(nasty / "links").lstrip("/"), str(nasty / "odd names" / "new\nline").lstrip("/")]
    data = subprocess.run(
        ["tar", "-C", "/", "-cf", "-", "--numeric-owner", "--", *rel],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    passes(data, allowed=["/" + r for r in rel], absolute_symlinks=True)
    err = refused(data, allowed=["/" + rel[0]], absolute_symlinks=True)
    assert "new\\nline" in str(err)


_NAME = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/\0"),
    min_size=1,
    max_size=40,
).filter(lambda s: s not in (".", ".."))


@st.composite
def benign_trees(draw: st.DrawFn) -> list[Entry]:
    entries: list[Entry] = []
    dirs: list[str] = [""]
    files: list[str] = []
    used: set[str] = set()
    for _ in range(draw(st.integers(1, 25))):
        parent = draw(st.sampled_from(dirs))
        name = draw(_NAME)
        if draw(st.booleans()) and draw(st.booleans()):
            name = name * draw(st.integers(2, 6))  # long names: GNU 'L' / pax path
        path = f"{parent}/{name}" if parent else name
        if path in used:
            continue
        used.add(path)
        kind = draw(st.sampled_from(["file", "file", "dir", "symlink", "hardlink"]))
        if kind == "hardlink" and not files:
            kind = "file"
        if kind == "file":
            entries.append(Entry(path, data=draw(st.binary(max_size=1500))))
            files.append(path)
        elif kind == "dir":
            entries.append(Entry(path, "dir"))
            dirs.append(path)
        elif kind == "hardlink":
            entries.append(Entry(path, "hardlink", link=draw(st.sampled_from(files))))
        else:
            target = draw(st.sampled_from([*files, *dirs[1:], "missing/dangling"]))
            rel = os.path.relpath(target, parent or ".")
            entries.append(Entry(path, "symlink", link=rel))
    return entries


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tree=benign_trees(),
    fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=5),
)
def test_random_benign_trees_pass_byte_identical(
    tree: list[Entry], fmt: int, sizes: list[int]
) -> None:
    data = with_tarfile(tree, fmt)
    passes(data, tuple(sizes))


@settings(max_examples=300, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
    cut=st.integers(0, 20_000),
)
def test_damaged_archives_pass_or_raise_integrity_error_only(
    flips: list[tuple[int, int]], cut: int
) -> None:
    base = with_tarfile(
        [
            Entry("d", "dir"),
            Entry("d/f", data=b"x" * 700),
            Entry("d/l", "symlink", link="f"),
            Entry("d/" + "n" * 120, data=b"y"),
            Entry("h", "hardlink", link="d/f"),
        ],
        tarfile.PAX_FORMAT,
    )
    data = bytearray(base[:cut] if cut < len(base) else base)
    for pos, x in flips:
        if pos < len(data):
            data[pos] ^= x
    try:
        check_tar(BytesReader(bytes(data)), KEY)
    except IntegrityError as e:
        assert KEY in str(e)


# -- speed -----------------------------------------------------------------------------


def _rate(data: bytes) -> float:
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        n = check_tar(BytesReader(data), KEY)
        best = max(best, n / (time.perf_counter() - t0) / 1e6)
    return best


def test_guard_speed_on_256_mib(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """256 MiB of volume-like content: a few big files and 20,000 small ones."""
    rnd = os.urandom(1 << 20)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(20_000):
            ti = tarfile.TarInfo(f"small/{i // 1000}/file-{i}.txt")
            ti.size = 2000
            tf.addfile(ti, io.BytesIO(rnd[i % 1000 : i % 1000 + 2000]))
        while buf.tell() < 256 << 20:
            ti = tarfile.TarInfo(f"big/{buf.tell()}.bin")
            ti.size = 16 << 20
            tf.addfile(ti, io.BytesIO(rnd * 16))
    data = buf.getvalue()
    mixed = _rate(data)
    small = _rate(data[: 20_000 * 2560] + bytes(1024))
    record_property("targuard_mb_s_mixed", round(mixed))
    record_property("targuard_mb_s_small_files", round(small))
    print(f"tar guard: {mixed:.0f} MB/s (256 MiB mixed), {small:.0f} MB/s (2 KB files)")
    assert len(data) >= 256 << 20
    assert mixed > 300


# -- incremental chains ----------------------------------------------------------------


def test_a_chain_shares_symlinks_between_levels() -> None:
    """GNU tar writes through a symlink already on disk (an earlier level made it):
    the next level may not put a member below it, unless it replaces it first."""
    level0 = with_tarfile([Entry("x", "symlink", link="/etc"), Entry("f", data=b"1")])
    sneaky = with_tarfile([Entry("x/cron.d/evil", data=b"* * * * * root sh")])
    honest = with_tarfile([Entry("x", "dir"), Entry("x/file", data=b"now a directory")])
    state = GuardState()
    check_tar(BytesReader(level0), KEY, absolute_symlinks=True, state=state)
    with pytest.raises(IntegrityError) as info:
        check_tar(BytesReader(sneaky), KEY, absolute_symlinks=True, state=state)
    assert "'x/cron.d/evil'" in str(info.value) and "lies below 'x'" in str(info.value)
    # each level alone is fine: only the chain shows the problem
    check_tar(BytesReader(sneaky), KEY, absolute_symlinks=True)
    state = GuardState()
    check_tar(BytesReader(level0), KEY, absolute_symlinks=True, state=state)
    check_tar(BytesReader(honest), KEY, absolute_symlinks=True, state=state)
    assert b"x" not in state.symlinks


def test_gnu_incremental_chain_where_a_symlink_became_a_directory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "real").mkdir()
    os.symlink("/app/data", src / "data")
    snar = tmp_path / "snar"
    argv = ["tar", "-C", str(src), f"--listed-incremental={snar}", "-cf", "-", "."]
    level0 = subprocess.run(argv, check=True, capture_output=True).stdout
    (src / "data").unlink()
    (src / "data").mkdir()
    (src / "data" / "new.txt").write_text("x")
    level1 = subprocess.run(argv, check=True, capture_output=True).stdout
    state = GuardState()
    for lv in (level0, level1):
        check_tar(BytesReader(lv), KEY, absolute_symlinks=True, state=state)
