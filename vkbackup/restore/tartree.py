"""A source's tree as it is in one snapshot, computed from its tars' headers alone.

`vkbackup ls`, `dump` and `restore --into` need to know what a path was in a
snapshot without extracting anything. For a `files` or `host` source that is
one tar; for a docker volume it is a GNU `--listed-incremental` chain: a full,
then incrementals that hold only what changed. Extracting a chain, GNU tar
deletes what each level's dumpdirs no longer list, so the answer is the chain
*applied*, not the union of its members. This module replays that from the
headers, in memory, holding metadata only:

- a GNU dumpdir member (type 'D') is a directory, and its data lists the
  directory's entries at that time: 'Y' (content in this archive), 'N'
  (unchanged: kept from an earlier level), 'D' (a subdirectory). If the tree
  has that directory, its 'R'/'T' pairs are applied first, in order: each
  renames a directory that moved (source, then target, both relative to the
  archive's root). An empty R or T argument is GNU tar's temporary directory,
  which 'X' makes (a swap of two names goes through it): a private key here
  ("\\0tmpN", which no member name can be), never "", the root. Then whatever
  the tree held under the directory that is not listed (or is listed as a
  directory and is none, or as a file and is a directory) is deleted. That is
  GNU tar's try_purge_directory (incremen.c), down to its failures: a
  malformed listing, or a rename whose source is missing, skips the rest of
  the renames and the deletes;
- a regular file, symlink or hard link member replaces what was at its name
  (a subtree included); a hard link to a symlink is that symlink again (as
  `tar -x` makes it: link(2) does not follow a symlink); a plain directory
  member ('5', the `files` and `host` tars) adds or updates the directory and
  deletes nothing;
- level 0 of a chain starts from an empty tree (restore wipes the volume).

Beside its entries the tree keeps each directory's names (a children index,
counting directories that hold entries without one of their own), so a
dumpdir, a replace or a rename costs what it touches, never a scan of the
whole tree: a volume of 55k files in 5k directories is one dumpdir per
directory at every level (benchmarks/tartree_bench.py).

Each file remembers where its content is: the chain level and the member's
ordinal in that level's tar (a name can occur twice in one tar, and the last
one wins, as on extraction). A second pass (`content`) re-reads only the
levels that hold wanted content and hands out each wanted member's data as a
stream, so nothing is buffered whole; `tar_stream` turns a selection into a
new tar (Python's tarfile headers, POSIX pax format) pulled chunk by chunk,
each content once: a regular file under the first selected name that has it,
a hard link to that name for every other.

The tars are parsed by Python's `tarfile` in stream mode ("r|"), over a
stream the caller has already put behind the tar guard. tarfile does not
know GNU dumpdirs, but hands their data out through extractfile, like any
type it does not support (a test pins this). Names are data: normalised here
(no leading "./" or "/", no trailing "/"), never interpreted.
"""

from __future__ import annotations

import posixpath
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import IO, Self, cast

from vkbackup.errors import IntegrityError
from vkbackup.streams import CHUNK, Readable

DUMPDIR = b"D"
FILE, DIR, SYMLINK, HARDLINK = "file", "dir", "symlink", "hardlink"
_TYPE_BITS = {FILE: stat.S_IFREG, DIR: stat.S_IFDIR, SYMLINK: stat.S_IFLNK, HARDLINK: stat.S_IFREG}
DUMPDIR_LIMIT = 64 * 1024 * 1024  # one directory's entry list held while it is applied


def norm(name: str) -> str:
    """Given a member name or a user's path ("./a/b/", "/etc/x", "."), return the
    tree's key for it ("a/b", "etc/x", "" for the root)."""
    path = posixpath.normpath("/" + name.strip()).lstrip("/")
    return "" if path == "." else path


@dataclass
class Entry:
    """One path of the tree: its metadata and, for a file, where its content is."""

    path: str  # normalised (see norm)
    type: str  # file | dir | symlink | hardlink
    mode: int  # permission bits (07777)
    uid: int
    gid: int
    size: int
    mtime: int
    link: str = ""  # symlink target as stored; hard link: the normalised target path
    level: int = -1  # chain level whose member carries the content (files, hard links)
    ordinal: int = -1  # the member's position in that level's tar
    member: str = ""  # that member's name (normalised): a hard link's is its target's

    @property
    def st_mode(self) -> int:
        return _TYPE_BITS[self.type] | self.mode

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "path": self.path,
            "type": self.type,
            "mode": f"{self.mode:04o}",
            "uid": self.uid,
            "gid": self.gid,
            "size": self.size,
            "mtime": self.mtime,
            "level": self.level,
        }
        if self.link:
            out["link"] = self.link
        return out


@dataclass
class Tree:
    """Paths of one source as a snapshot has them (see the module docstring)."""

    entries: dict[str, Entry] = field(default_factory=dict)
    #: directory -> the names directly under it (entries, and directories that hold
    #: entries without one of their own); a directory with none has no key
    kids: dict[str, set[str]] = field(default_factory=dict)

    def children(self, directory: str) -> list[str]:
        """Names directly under *directory* (a normalised path)."""
        return list(self.kids.get(directory, ()))

    def has(self, path: str) -> bool:
        """Whether *path* is in the tree: an entry, or a directory holding some."""
        return path in self.entries or path in self.kids

    def remove(self, path: str) -> None:
        """Delete *path* and everything below it."""
        if not self.has(path):
            return
        for p in self._walk(path):
            self.entries.pop(p, None)
            self.kids.pop(p, None)
        self._unlink(path)

    def below(self, path: str) -> list[Entry]:
        """*path* and everything below it, sorted (parents before children); [] if none.
        A path that has no entry of its own but holds some (a `files` tar lists
        files without their parent directories) is present too."""
        if not self.has(path):
            return []
        return [self.entries[p] for p in sorted(self._walk(path)) if p in self.entries]

    def apply(self, level: int, members: tarfile.TarFile, where: str) -> None:
        """Apply one chain level's tar (stream mode) to the tree; *where* names the
        object in errors. Level 0 starts from an empty tree."""
        if level == 0:
            self.entries.clear()
            self.kids.clear()
        for ordinal, ti in enumerate(members):
            path = norm(ti.name)
            if ti.type == DUMPDIR:
                listing = _read_dumpdir(members, ti, where)
                self._dumpdir(path, ti, listing)
                continue
            if ti.isdir():
                self._put(path, _entry(path, DIR, ti), keep_children=True)
            elif ti.isreg():
                e = _entry(path, FILE, ti)
                e.level, e.ordinal, e.member = level, ordinal, path
                self._put(path, e)
            elif ti.issym():
                e = _entry(path, SYMLINK, ti)
                e.link = ti.linkname
                self._put(path, e)
            elif ti.islnk():
                self._put(path, self._hardlink(path, ti, where))
            # anything else (a volume label) holds no path

    def _hardlink(self, path: str, ti: tarfile.TarInfo, where: str) -> Entry:
        """The entry of hard link member *ti*: the content its target has now (on
        disk: the same inode). A hard link to a symlink is that symlink again, as
        `tar -x` makes it (link(2) does not follow a symlink)."""
        e = _entry(path, HARDLINK, ti)
        e.link = norm(ti.linkname)
        target = self.entries.get(e.link)
        if target is not None and target.type == SYMLINK:
            return replace(target, path=path)
        if target is None or target.level < 0:
            raise IntegrityError(
                f"{where}: hard link {ti.name!r} to {ti.linkname!r}, which holds no file"
            )
        e.size, e.level, e.ordinal, e.member = (
            target.size, target.level, target.ordinal, target.member,
        )  # fmt: skip
        return e

    # -- the children index: every change to `entries` goes through these ------------

    def _add(self, path: str, e: Entry) -> None:
        self.entries[path] = e
        while path:  # link it, and any parent not linked yet, to its parent
            parent, _, name = path.rpartition("/")
            names = self.kids.setdefault(parent, set())
            if name in names:
                break
            names.add(name)
            path = parent

    def _unlink(self, path: str) -> None:
        """Drop *path* (gone already) from its parent; a parent that was only there
        to hold it (no entry of its own) goes too."""
        while path:
            parent, _, name = path.rpartition("/")
            names = self.kids.get(parent)
            if names is None:
                return
            names.discard(name)
            if names:
                return
            del self.kids[parent]
            if parent in self.entries:
                return
            path = parent

    def _walk(self, path: str) -> list[str]:
        """*path* and every path below it (unsorted)."""
        out: list[str] = []
        todo = [path]
        while todo:
            p = todo.pop()
            out.append(p)
            names = self.kids.get(p)
            if names:
                prefix = p + "/" if p else ""
                todo.extend(prefix + n for n in names)
        return out

    # -- applying members ----------------------------------------------------------

    def _put(self, path: str, e: Entry, keep_children: bool = False) -> None:
        if self.has(path):
            old = self.entries.get(path)
            if not (keep_children and (old is None or old.type == DIR)):
                self.remove(path)
        self._add(path, e)

    def _dumpdir(self, path: str, ti: tarfile.TarInfo, listing: list[bytes]) -> None:
        """Apply a dumpdir as `tar -x --listed-incremental` does (GNU tar's
        incremen.c, try_purge_directory): if the directory exists, first the
        renames, in order, then delete what is not listed (or is listed as a
        directory and is none, or as a file and is a directory); then the
        directory itself. A malformed listing, or a rename whose source is
        missing, stops before the deletes, as there."""
        if self.has(path) and _dumpdir_ok(listing):
            names: dict[str, bytes] = {}
            for item in listing:
                code, arg = item[:1], item[1:].decode("utf-8", "surrogateescape")
                if code in (b"Y", b"N", b"D"):
                    names[arg] = code
            if self._renames(listing):
                for child in self.children(path):
                    listed = names.get(child)
                    full = f"{path}/{child}" if path else child
                    old = self.entries.get(full)
                    is_dir = old.type == DIR if old is not None else True  # holds entries
                    if (
                        listed is None
                        or (listed == b"D" and not is_dir)
                        or (listed == b"Y" and is_dir)
                    ):
                        self.remove(full)
        self._put(path, _entry(path, DIR, ti), keep_children=True)

    def _renames(self, listing: list[bytes]) -> bool:
        """Apply a dumpdir's 'R'/'T' pairs. 'X' opens a temporary directory (GNU
        tar's mkdtemp under the X argument); an empty R or T argument is it. Here
        that is a private key ("\\0tmpN": no member name holds a NUL), never "",
        which is the root. Return False if a rename found no source."""
        temps: list[str] = []
        temp = ""
        src: str | None = None
        ok = True
        for item in listing:
            code, raw = item[:1], item[1:]
            if code == b"X":
                temp = f"\0tmp{len(temps)}"
                temps.append(temp)
                continue
            if code not in (b"R", b"T"):
                continue
            name = norm(raw.decode("utf-8", "surrogateescape")) if raw else temp
            if code == b"R":
                src = name
            elif src is not None:
                if not self._rename(src, name):
                    ok = False
                    break
                src = None
        for t in temps:  # a temporary directory left over (a broken listing): gone
            self.remove(t)
        return ok

    def _rename(self, src: str, dst: str) -> bool:
        if not self.has(src) or src == dst:
            return self.has(src)
        moved = [self.entries[p] for p in self._walk(src) if p in self.entries]
        self.remove(src)
        self.remove(dst)
        for e in moved:
            e.path = dst + e.path[len(src) :]
            self._add(e.path, e)
        return True


def _dumpdir_ok(listing: list[bytes]) -> bool:
    """GNU tar's dumpdir_ok: 'T' follows each 'R'; an empty R or T argument only
    after an 'X'; one 'X' at a time."""
    has_temp = False
    expect_t = False
    for item in listing:
        code, empty = item[:1], len(item) == 1
        if expect_t and code != b"T":
            return False
        if code == b"X":
            if has_temp:
                return False
            has_temp = True
        elif code == b"R":
            if empty:
                if not has_temp:
                    return False
                has_temp = False
            expect_t = True
        elif code == b"T":
            if not expect_t or (empty and not has_temp):
                return False
            expect_t = False
    return not expect_t


def _entry(path: str, kind: str, ti: tarfile.TarInfo) -> Entry:
    size = ti.size if kind == FILE else 0
    return Entry(path, kind, ti.mode & 0o7777, ti.uid, ti.gid, size, int(ti.mtime))


def _read_dumpdir(members: tarfile.TarFile, ti: tarfile.TarInfo, where: str) -> list[bytes]:
    if ti.size > DUMPDIR_LIMIT:
        raise IntegrityError(f"{where}: dumpdir of {ti.name!r} is over {DUMPDIR_LIMIT} bytes")
    f = members.extractfile(ti)
    data = f.read() if f is not None else b""
    return [x for x in data.split(b"\0") if x]


class GnuTarInfo(tarfile.TarInfo):
    """TarInfo that reads old-GNU headers' names right.

    GNU tar's incremental mode (the "gnu" format) stores atime and ctime where
    ustar has its name prefix (offsets 345 and 357), and Python's tarfile (3.11
    to 3.13 at least) joins them to the name as if they were a prefix:
    "./d/b" comes out as "15303251202/./d/b". An old-GNU header (magic
    "ustar  ") has no prefix field, so its name is the name field alone."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        obj = super().frombuf(buf, encoding, errors)
        if buf[257:265] == tarfile.GNU_MAGIC and obj.type not in tarfile.GNU_TYPES:
            name = bytes(buf[0:100]).split(b"\0", 1)[0].decode(encoding, errors)
            obj.name = name.rstrip("/") if obj.isdir() else name
        return obj


def open_tar(stream: Readable) -> tarfile.TarFile:
    """A tarfile reading *stream* in stream mode (names decoded with surrogateescape)."""
    return tarfile.open(
        fileobj=cast("IO[bytes]", stream),
        mode="r|",
        encoding="utf-8",
        errors="surrogateescape",
        tarinfo=GnuTarInfo,
    )


def build(levels: Iterable[tuple[int, tarfile.TarFile]], where: str = "tar") -> Tree:
    """Given each chain level's tar in order, return the tree after the last one."""
    tree = Tree()
    for level, members in levels:
        tree.apply(level, members, where)
    return tree


# -- the second pass: content ----------------------------------------------------

#: opens chain level N's tar (stream mode) and closes it when the context ends
OpenLevel = Callable[[int], "LevelTar"]


class LevelTar:
    """One level's tar, open. close(): done with it (the action reads the object to
    its end there, so its checks run, then releases it); abort(): release only
    (an error is on its way already)."""

    def __init__(
        self,
        members: tarfile.TarFile,
        close: Callable[[], None],
        abort: Callable[[], None] | None = None,
    ) -> None:
        self.members = members
        self._close = close
        self._abort = abort or close

    def close(self) -> None:
        self._close()

    def abort(self) -> None:
        self._abort()


def content(wanted: Iterable[Entry], open_level: OpenLevel) -> Iterator[tuple[Entry, IO[bytes]]]:
    """Given entries with content (files, hard links), yield each with its data as a
    stream, level by level, in the order the tars hold them. Each stream is only
    valid until the next item. Raise IntegrityError if a member is not where the
    first pass saw it."""
    by_level: dict[int, dict[int, list[Entry]]] = {}
    for e in wanted:
        by_level.setdefault(e.level, {}).setdefault(e.ordinal, []).append(e)
    for level in sorted(by_level):
        want = by_level[level]
        tar = open_level(level)
        ok = False
        try:
            for ordinal, ti in enumerate(tar.members):
                if ordinal not in want:
                    continue
                for e in want.pop(ordinal):
                    f = tar.members.extractfile(ti) if ti.isreg() else None
                    if f is None or norm(ti.name) != e.member:
                        raise IntegrityError(
                            f"chain level {level}: member {ordinal} is not {e.path!r} any more"
                        )
                    yield e, f
                if not want:
                    break
            ok = True
        finally:
            if ok:
                tar.close()
            else:  # an error, or the consumer stopped early
                tar.abort()
        if want:
            raise IntegrityError(f"chain level {level}: the tar ended before every wanted member")


def tar_stream(selected: list[Entry], open_level: OpenLevel) -> Iterator[bytes]:
    """Yield a tar (POSIX pax, as tarfile writes it) of *selected* entries, names
    as in the tree: file contents level by level, then symlinks and hard links,
    then directories, deepest first, so `tar -x` sets each directory's mode and
    mtime after everything inside it was written (a read-only directory too).
    Content is written once, as a regular file under the first selected name
    that has it (a hard link too: its target may be unselected, come later, or
    hold other content by now); every other name with the same content becomes
    a hard link to that one, written after it."""
    files: list[Entry] = []
    later: list[Entry] = []  # hard links and symlinks, after the files
    first: dict[tuple[int, int], str] = {}  # content already in the tar -> its name there
    for e in selected:
        if e.type == SYMLINK:
            later.append(e)
        elif e.type != DIR:
            key = (e.level, e.ordinal)
            if key in first:  # the same content again: a hard link to its first name
                later.append(Entry(e.path, HARDLINK, e.mode, e.uid, e.gid, 0, e.mtime, first[key]))
            else:
                first[key] = e.path
                files.append(replace(e, type=FILE))
    for e, data in content(files, open_level):
        yield _header(e)
        left = e.size
        while left > 0:
            chunk = data.read(min(CHUNK, left))
            if not chunk:
                raise IntegrityError(f"{e.path!r}: the tar member ended early")
            left -= len(chunk)
            yield chunk
        if e.size % tarfile.BLOCKSIZE:
            yield bytes(tarfile.BLOCKSIZE - e.size % tarfile.BLOCKSIZE)
    for e in later:
        yield _header(e)
    for e in sorted((e for e in selected if e.type == DIR), key=lambda e: e.path, reverse=True):
        yield _header(e)
    yield bytes(2 * tarfile.BLOCKSIZE)


def content_size(selected: Iterable[Entry]) -> int:
    """The bytes of content tar_stream writes for *selected*: each content once,
    however many names (hard links) it has."""
    return sum({(e.level, e.ordinal): e.size for e in selected if e.level >= 0}.values())


def _header(e: Entry) -> bytes:
    ti = tarfile.TarInfo(e.path + ("/" if e.type == DIR and e.path else ""))
    if not e.path:
        ti.name = "./"
    ti.mode, ti.uid, ti.gid, ti.mtime = e.mode, e.uid, e.gid, e.mtime
    ti.uname = ti.gname = ""
    if e.type == DIR:
        ti.type = tarfile.DIRTYPE
    elif e.type == SYMLINK:
        ti.type, ti.linkname = tarfile.SYMTYPE, e.link
    elif e.type == HARDLINK:
        ti.type, ti.linkname = tarfile.LNKTYPE, e.link
    else:
        ti.type, ti.size = tarfile.REGTYPE, e.size
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class IterReader:
    """A Readable over an iterator of byte chunks (a tar being generated)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = b""

    def read(self, n: int = -1, /) -> bytes:
        while not self._left:
            nxt = next(self._chunks, None)
            if nxt is None:
                return b""
            self._left = nxt
        limit = n if n and n > 0 else CHUNK
        out, self._left = self._left[:limit], self._left[limit:]
        return out
