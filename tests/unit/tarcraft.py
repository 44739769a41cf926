"""Build tar archives for the tar guard's tests: with Python's tarfile, by hand
(raw headers tarfile refuses to write), and with GNU tar from a tree on disk.

    Entry(name, kind="file"|"dir"|"symlink"|"hardlink"|"chr"|"blk"|"fifo", data, link, pax)
    with_tarfile(entries, fmt=tarfile.GNU_FORMAT, global_pax=None) -> bytes
    raw_header(name, typeflag, size=0, link=b"", magic=b"ustar\\x0000") -> bytes  (512, checksummed)
    patched(header, offset, value) -> bytes        a field overwritten, checksum recomputed
    end_blocks() -> bytes                          two zero blocks
    nasty_tree(root)                               the lab volume's nasty-but-legal cases
    gnu_tar(root, *args) -> bytes                  `tar -C root -cf - --numeric-owner -S -p ARGS .`
    ChunkedReader(data, sizes)                     a Readable returning chunks of the given sizes
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 512


@dataclass
class Entry:
    name: str
    kind: str = "file"
    data: bytes = b""
    link: str = ""
    pax: dict[str, str] = field(default_factory=dict)


_KINDS = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def with_tarfile(
    entries: Iterable[Entry],
    fmt: int = tarfile.GNU_FORMAT,
    global_pax: dict[str, str] | None = None,
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=global_pax) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type = _KINDS[e.kind]
            ti.linkname = e.link
            ti.mode = 0o755 if e.kind == "dir" else 0o644
            ti.mtime = 1_700_000_000
            if e.pax:
                ti.pax_headers = dict(e.pax)
            if e.kind == "file":
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def _checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)


def raw_header(
    name: bytes,
    typeflag: bytes,
    size: int = 0,
    link: bytes = b"",
    magic: bytes = b"ustar\x0000",
    prefix: bytes = b"",
) -> bytes:
    """A ustar header written by hand (for what tarfile will not write)."""
    h = bytearray(BLOCK)
    h[0 : len(name)] = name
    h[100:108] = b"0000644\x00"
    h[108:116] = b"0000000\x00"
    h[116:124] = b"0000000\x00"
    h[124:136] = b"%011o\x00" % size
    h[136:148] = b"14000000000\x00"
    h[156:157] = typeflag
    h[157 : 157 + len(link)] = link
    h[257 : 257 + len(magic)] = magic
    h[345 : 345 + len(prefix)] = prefix
    _checksum(h)
    return bytes(h)


def patched(header: bytes, offset: int, value: bytes) -> bytes:
    """The header with *value* written at *offset*, checksum recomputed."""
    h = bytearray(header)
    h[offset : offset + len(value)] = value
    _checksum(h)
    return bytes(h)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def end_blocks() -> bytes:
    return bytes(2 * BLOCK)


def nasty_tree(root: Path) -> None:
    """The cases tests/lab/files/seed_storage.py puts in the lab's volume, and more:
    symlinks (relative, absolute, to a directory, dangling, a loop), hard links within
    and across directories, a sparse file with many extents, odd names, empty dirs,
    long names and long link targets."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "large").mkdir()
    (root / "large" / "blob.bin").write_bytes(os.urandom(300_000))
    links = root / "links"
    links.mkdir()
    (links / "original.txt").write_bytes(b"hard linked content\n" * 50)
    os.link(links / "original.txt", links / "hardlink-same-dir.txt")
    (links / "other").mkdir()
    os.link(links / "original.txt", links / "other" / "hardlink-other-dir.txt")
    os.symlink("original.txt", links / "relative-link")
    os.symlink("/app/storage/links/original.txt", links / "absolute-link")
    os.symlink("../large", links / "dir-link")
    os.symlink("does-not-exist/anywhere", links / "dangling-link")
    os.symlink("/nonexistent/absolute", links / "dangling-absolute")
    os.symlink("loop-b", links / "loop-a")
    os.symlink("loop-a", links / "loop-b")
    sparse = root / "sparse"
    sparse.mkdir()
    with open(sparse / "disk.img", "wb") as f:
        f.truncate(64 * 1024 * 1024)
        for i in range(12):  # more extents than one GNU 'S' header holds
            f.seek(i * 5 * 1024 * 1024)
            f.write(os.urandom(4096))
    odd = root / "odd names"
    odd.mkdir()
    (odd / "with space.txt").write_text("s")
    (odd / "new\nline").write_text("n")
    (odd / "ünïcødé-名前.txt").write_text("u")
    (odd / "-dash").write_text("d")
    (odd / "\\back\\slash").write_text("b")
    (odd / "tab\there").write_text("t")
    (odd / "\"quotes'").write_text("q")
    (odd / ("n" * 255)).write_text("255-byte name")
    with open(os.path.join(os.fsencode(odd), b"invalid-\xff\xfe-utf8"), "wb") as f:
        f.write(b"bytes")
    nest = root / "nest"
    for i in range(24):
        nest = nest / f"level{i}"
    nest.mkdir(parents=True)
    (nest / "deep.txt").write_text("24 levels down")
    (root / "empty").mkdir()
    (root / "empty" / "nested-empty").mkdir()
    deep = root / ("d" * 60) / ("e" * 60) / ("f" * 60)
    deep.mkdir(parents=True)
    (deep / ("g" * 120)).write_text("long name")
    os.symlink("../" * 1 + "e" * 60 + "/" + "x" * 150, deep / "long-target")


def gnu_tar(root: Path, *args: str) -> bytes:
    return subprocess.run(
        ["tar", "-C", str(root), "-cf", "-", "--numeric-owner", "-S", "-p", *args, "."],
        check=True,
        capture_output=True,
    ).stdout


class ChunkedReader:
    """A Readable over bytes that returns chunks of the given sizes (cycled)."""

    def __init__(self, data: bytes, sizes: Sequence[int]) -> None:
        self._data = data
        self._pos = 0
        self._sizes = [max(1, s) for s in sizes] or [1]
        self._i = 0

    def read(self, n: int = -1, /) -> bytes:
        size = self._sizes[self._i % len(self._sizes)]
        self._i += 1
        if n is not None and n > 0:
            size = min(size, n)
        out = self._data[self._pos : self._pos + size]
        self._pos += len(out)
        return out
