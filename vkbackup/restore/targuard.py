"""Refuse hostile tar archives on restore, while the bytes flow past.

`TarGuard` is a pass-through `Readable`: every byte it returns is exactly the
byte it read, and it parses the tar headers (ustar, GNU and pax) in between,
without holding member data. The moment a header would make `tar -x` write
outside its target it raises `IntegrityError` naming the object and the
member, *before* returning the chunk that completes that header, so the tar
on the other end never sees it.

Refused (each with the member named):
- a member name that is absolute or has a '..' component (the ustar name,
  the POSIX prefix, a GNU long name 'L', a pax `path` or `GNU.sparse.name`:
  every candidate is checked, so parsers that disagree on precedence cannot
  be played against each other);
- a member below a symlink the archive created earlier (writing through it),
  or that an earlier archive of the same incremental chain created (pass one
  `GuardState` along the chain: GNU tar writes through a symlink already on
  disk); a file or directory member replaces a symlink of its name, as tar does;
- a symlink whose target climbs out of the archive root, resolved from the
  link's own directory; or whose target is absolute, unless
  ``absolute_symlinks=True`` (a volume's absolute links name paths inside the
  container that mounts it, and the lab's volume has two); or that passes
  through another symlink of the archive and then climbs with '..' (the
  kernel would resolve it somewhere a lexical check cannot see), whichever of
  the two comes first;
- a hard link whose target is absolute, has '..', or lies below a symlink;
- character and block devices, FIFOs, multi-volume and unknown member types;
- with ``allowed`` (a `files` source): a member, or a hard link target,
  that is not one of the recorded paths or below one;
- with ``patterns`` (a `files` source's configured globs): a member, or a hard
  link target, that is not a match of one of them or below one
  (`vkbackup.pathglob`), whatever the recorded list says;
- structure tar itself would read differently from us: a bad header
  checksum, a bad size field, a link or directory carrying data, a malformed
  pax record or GNU dumpdir, extended headers bigger than 1 MiB, non-zero
  bytes after the end-of-archive block, and a stream that ends early.

Understood and passed: regular and contiguous files, directories, symlinks,
hard links, pax 'x'/'g' headers (path, linkpath, size, GNU.sparse.*), GNU
long names 'L'/'K', old GNU sparse 'S' members (their extension blocks; the
data size is the header's), GNU incremental dumpdirs 'D' (whose entries are
checked too: 'Y'/'N'/'D' single names, 'R'/'T'/'X' relative paths), volume
labels 'V'.

Cost: nothing per data byte (a counter skips member data), one 512-byte
parse per header; measured in tests/unit/restore/test_targuard.py.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from vkbackup.errors import IntegrityError
from vkbackup.pathglob import PathPatterns
from vkbackup.streams import CHUNK, Readable

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
EXT_LIMIT = 1024 * 1024  # payload of one pax header or GNU long name
DUMPDIR_ENTRY_LIMIT = 64 * 1024

_HDR, _SKIP, _EXT, _DUMPDIR, _SPARSE, _END = range(6)

_REGULAR = frozenset(b"07\x00")
_HARDLINK = ord("1")
_SYMLINK = ord("2")
_CHAR, _BLOCKDEV, _FIFO = ord("3"), ord("4"), ord("6")
_DIR = ord("5")
_DUMPDIR_T = ord("D")
_SPARSE_T = ord("S")
_LABEL = ord("V")
_PAX, _PAX_GLOBAL = ord("x"), ord("g")
_LONGNAME, _LONGLINK = ord("L"), ord("K")
_EXT_TYPES = frozenset((_PAX, _PAX_GLOBAL, _LONGNAME, _LONGLINK))
_SPECIAL_NAMES = {_CHAR: "character device", _BLOCKDEV: "block device", _FIFO: "FIFO"}
_OCTAL = b"01234567"
_SIGNED = struct.Struct("512b")
_NAME_KEYS = (b"path", b"GNU.sparse.name")


def _show(name: bytes, limit: int = 160) -> str:
    text = name.decode("utf-8", "backslashreplace")
    if len(text) > limit:  # keep both ends: the tail is where '..' tricks hide
        text = text[: limit // 3] + "..." + text[-(limit - limit // 3) :]
    return repr(text)


def _cstr(field: bytes) -> bytes:
    end = field.find(0)
    return field if end < 0 else field[:end]


def _padded(size: int) -> int:
    return (size + BLOCK - 1) & ~(BLOCK - 1)


def _components(path: bytes) -> list[bytes]:
    return [c for c in path.split(b"/") if c and c != b"."]


@dataclass
class GuardState:
    """What the archives read so far left on the target: the symlinks they created
    (normalized names) and, for each directory some symlink climbs out of with '..',
    that symlink. An incremental chain passes one state from level to level, because
    a symlink a full created is still there when the next level is extracted, and GNU
    tar writes through a symlink that is already on disk."""

    symlinks: set[bytes] = field(default_factory=set)
    popped: dict[bytes, bytes] = field(default_factory=dict)


class TarGuard:
    """Pass-through reader that refuses hostile tar members (see the module docstring).

    read(n) returns the next bytes of *src*, unchanged, once checked; feed() and
    finish() run the same checks on bytes the caller holds (*src* unused).
    ``members`` counts the members seen so far. ``state`` is the GuardState to
    pass to the guard of the next level of an incremental chain (symlinks made
    earlier stay on the target).
    """

    def __init__(
        self,
        src: Readable,
        name: str,
        *,
        allowed: Iterable[str] | None = None,
        absolute_symlinks: bool = False,
        state: GuardState | None = None,
        patterns: Iterable[str] | None = None,
    ) -> None:
        self._src = src
        self._name = name
        self._absolute_symlinks = absolute_symlinks
        self._patterns = None if patterns is None else PathPatterns(patterns)
        self._allowed: set[bytes] | None = None
        if allowed is not None:
            self._allowed = set()
            for p in allowed:
                comps = _components(p.encode("utf-8", "surrogateescape"))
                if comps:
                    self._allowed.add(b"/".join(comps))
        self._state = _HDR
        self._left = 0  # bytes left in the current data/payload region
        self._pad = 0  # padding to skip after a payload
        self._buf = bytearray()  # a header being assembled across reads
        self._ext = bytearray()  # payload of an extension header
        self._ext_type = 0
        self._dd = bytearray()  # dumpdir entry being assembled
        self._dd_member = b""
        self._offset = 0  # stream offset of the start of the current read
        self._here = 0  # stream offset of the header being looked at
        self._pax: dict[bytes, bytes] = {}
        self._global: dict[bytes, bytes] = {}
        self._long_name: bytes | None = None
        self._long_link: bytes | None = None
        self.state = state if state is not None else GuardState()
        self._symlinks = self.state.symlinks
        self._popped = self.state.popped
        self._eof = False
        self._failed: IntegrityError | None = None
        self.members = 0

    # -- Readable ------------------------------------------------------------

    def read(self, n: int = -1, /) -> bytes:
        data = self._src.read(n)
        if data:
            self.feed(data)
        else:
            self.finish()
        return data

    # -- errors ----------------------------------------------------------------

    def _refuse(self, member: bytes | None, why: str) -> IntegrityError:
        where = f"member {_show(member)}" if member is not None else "tar stream"
        return IntegrityError(
            f"{self._name}: hostile or malformed tar: {where} (header at byte "
            f"{self._here}): {why}; refusing to restore it",
            hint="the backed-up host may have been compromised when the snapshot was taken: "
            "list the archive (age -d -i IDENTITY OBJECT | gzip -dc | tar -tvf -) and "
            "restore by hand only what you trust",
        )

    # -- the byte loop (push interface: for a caller that holds the bytes) ---------

    def feed(self, data: bytes) -> None:
        """Check the next bytes of the archive; raise IntegrityError on a hostile member
        (and again on every later call: a refused archive stays refused)."""
        if self._failed is not None:
            raise self._failed
        try:
            self._scan(data)
        except IntegrityError as e:
            self._failed = e
            raise

    def _scan(self, data: bytes) -> None:
        n = len(data)
        pos = 0
        while pos < n:
            st = self._state
            if st == _SKIP:
                take = min(self._left, n - pos)
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _HDR
            elif st in (_HDR, _SPARSE):
                if not self._buf and n - pos >= BLOCK:
                    block = data[pos : pos + BLOCK]
                    pos += BLOCK
                else:
                    take = min(BLOCK - len(self._buf), n - pos)
                    self._buf += data[pos : pos + take]
                    pos += take
                    if len(self._buf) < BLOCK:
                        continue
                    block = bytes(self._buf)
                    self._buf.clear()
                self._here = self._offset + pos - BLOCK
                if st == _HDR:
                    self._header(block)
                else:
                    self._sparse_extension(block)
            elif st == _EXT:
                take = min(self._left, n - pos)
                self._ext += data[pos : pos + take]
                pos += take
                self._left -= take
                if not self._left:
                    self._extension_done()
            elif st == _DUMPDIR:
                take = min(self._left, n - pos)
                self._dumpdir_bytes(data[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._dumpdir_done()
            else:  # _END: only zero padding may follow the end-of-archive block
                if data.count(0, pos) != n - pos:
                    self._here = self._offset + pos
                    raise self._refuse(None, "data after the end-of-archive marker")
                pos = n
        self._offset += n

    def finish(self) -> None:
        """The archive ended here: raise IntegrityError unless it ended properly."""
        if self._failed is not None:
            raise self._failed
        if self._eof:
            return
        self._eof = True
        if self._state == _END:
            return
        self._here = self._offset
        if self._offset == 0:
            self._failed = self._refuse(None, "empty stream: not a tar archive")
            raise self._failed
        self._failed = self._refuse(
            None, "the stream ends before the end-of-archive marker (truncated archive)"
        )
        raise self._failed

    def _skip(self, nbytes: int) -> None:
        if nbytes:
            self._state = _SKIP
            self._left = nbytes
        else:
            self._state = _HDR

    def _after_data(self, size: int) -> None:
        self._skip(_padded(size))

    # -- headers ---------------------------------------------------------------

    def _number(self, field: bytes, what: str, member: bytes) -> int:
        if field[0] & 0x80:  # GNU base-256
            if field[0] & 0x40:
                raise self._refuse(member, f"negative {what} field")
            return int.from_bytes(bytes([field[0] & 0x3F]) + field[1:], "big")
        text = field.split(b"\0", 1)[0].strip(b" ")
        if not text:
            return 0
        if text.translate(None, _OCTAL):
            raise self._refuse(member, f"bad {what} field {field!r}")
        return int(text, 8)

    def _header(self, block: bytes) -> None:
        if block == ZERO_BLOCK:
            if self._pax or self._long_name is not None or self._long_link is not None:
                raise self._refuse(None, "end-of-archive marker right after an extended header")
            self._state = _END
            return
        raw_name = _cstr(block[0:100])
        stored = self._number(block[148:156], "checksum", raw_name)
        unsigned = sum(block) - sum(block[148:156]) + 8 * 32
        if stored != unsigned:
            signed = sum(_SIGNED.unpack(block)) - sum(_SIGNED.unpack(block)[148:156]) + 8 * 32
            if stored != signed:
                raise self._refuse(raw_name, "header checksum does not match (not a tar header)")
        size = self._number(block[124:136], "size", raw_name)
        kind = block[156]
        if kind in _EXT_TYPES:
            if size > EXT_LIMIT:
                raise self._refuse(raw_name, f"extended header of {size} bytes (limit {EXT_LIMIT})")
            self._ext_type = kind
            self._ext.clear()
            self._pad = _padded(size) - size
            if size:
                self._state = _EXT
                self._left = size
            else:
                self._extension_done()
            return
        self._member(block, raw_name, kind, size)

    def _extension_done(self) -> None:
        payload = bytes(self._ext)
        self._ext.clear()
        kind = self._ext_type
        if kind == _LONGNAME:
            self._long_name = _cstr(payload)
            self._safe_name(self._long_name)
        elif kind == _LONGLINK:
            self._long_link = _cstr(payload)
        else:
            records = self._pax_records(payload)
            target = self._pax if kind == _PAX else self._global
            for key, value in records:
                if key in _NAME_KEYS or key == b"linkpath":
                    if b"\0" in value:
                        raise self._refuse(value, f"pax {key.decode()} holds a NUL byte")
                    if key in _NAME_KEYS and value:
                        self._safe_name(value)
                if value:
                    target[key] = value
                else:
                    target.pop(key, None)
        self._skip(self._pad)

    def _pax_records(self, payload: bytes) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        pos = 0
        end = len(payload)
        while pos < end:
            if not payload[pos:].strip(b"\0"):
                break  # NUL padding after the last record
            sp = payload.find(b" ", pos, pos + 20)
            length_text = payload[pos:sp] if sp > pos else b""
            if not length_text.isdigit() or int(length_text) <= sp - pos + 1:
                raise self._refuse(None, "malformed pax extended header record")
            length = int(length_text)
            record = payload[pos : pos + length]
            if len(record) != length or not record.endswith(b"\n") or b"=" not in record:
                raise self._refuse(None, "malformed pax extended header record")
            key, _, value = record[sp - pos + 1 : -1].partition(b"=")
            out.append((key, value))
            pos += length
        return out

    def _sparse_extension(self, block: bytes) -> None:
        # an old GNU sparse header's extension block: 21 entries, then isextended
        if not block[504]:
            self._after_data(self._left)

    # -- members ---------------------------------------------------------------

    def _safe_name(self, name: bytes) -> list[bytes]:
        """Given a member name, return its components; refuse absolute or '..'."""
        if not name:
            raise self._refuse(name, "empty member name")
        if name.startswith(b"/"):
            raise self._refuse(name, "absolute member name")
        comps = _components(name)
        if b".." in comps:
            raise self._refuse(name, "member name with a '..' component")
        return comps

    def _below_symlink(self, comps: list[bytes], member: bytes, what: str) -> None:
        if not self._symlinks:
            return
        for i in range(1, len(comps)):
            prefix = b"/".join(comps[:i])
            if prefix in self._symlinks:
                raise self._refuse(
                    member, f"{what} lies below {_show(prefix)}, a symlink in this archive"
                )

    def _in_allowed(self, comps: list[bytes]) -> bool:
        assert self._allowed is not None
        return any(b"/".join(comps[:i]) in self._allowed for i in range(1, len(comps) + 1))

    def _in_patterns(self, comps: list[bytes]) -> bool:
        assert self._patterns is not None
        return self._patterns.covers([c.decode("utf-8", "surrogateescape") for c in comps])

    def _member(self, block: bytes, raw_name: bytes, kind: int, size: int) -> None:
        self.members += 1
        pax = {**self._global, **self._pax}
        name = raw_name
        if block[257:263] == b"ustar\x00":  # POSIX: the prefix field extends the name
            prefix = _cstr(block[345:500])
            if prefix:
                name = prefix + b"/" + raw_name
        candidates = [name]
        if self._long_name is not None:
            candidates.append(self._long_name)
        candidates += [pax[k] for k in (b"path", b"GNU.sparse.name") if k in pax]
        member = candidates[-1]
        for c in candidates:
            self._safe_name(c)
        comps = _components(member)
        link_candidates = [_cstr(block[157:257])]
        if self._long_link is not None:
            link_candidates.append(self._long_link)
        if b"linkpath" in pax:
            link_candidates.append(pax[b"linkpath"])
        if b"size" in pax:
            if not pax[b"size"].isdigit():
                raise self._refuse(member, "bad pax size")
            size = int(pax[b"size"])
        self._pax = {}
        self._long_name = self._long_link = None
        self._below_symlink(comps, member, "member")
        if self._allowed is not None and kind != _LABEL and not self._in_allowed(comps):
            raise self._refuse(member, "not one of the paths this snapshot recorded")
        if self._patterns is not None and kind != _LABEL and not self._in_patterns(comps):
            raise self._refuse(member, "outside the source's configured paths (patterns)")
        if self._symlinks and kind not in (_SYMLINK, _HARDLINK, _LABEL):
            # tar replaces a symlink on disk by a file or directory of the same name
            self._symlinks.discard(b"/".join(comps))

        if kind in _REGULAR:
            if kind == 0 and member.endswith(b"/") and size:
                raise self._refuse(member, "old-style directory entry carrying data")
            self._after_data(size)
        elif kind == _DIR:
            self._no_data(member, size, "directory")
            self._after_data(0)
        elif kind == _SYMLINK:
            self._no_data(member, size, "symlink")
            if not comps:
                raise self._refuse(member, "symlink in place of the archive root")
            for t in link_candidates:
                self._check_symlink(member, comps, t)
            self._add_symlink(member, comps)
            self._after_data(0)
        elif kind == _HARDLINK:
            self._no_data(member, size, "hard link")
            if not comps:
                raise self._refuse(member, "hard link in place of the archive root")
            for t in link_candidates:
                self._check_hardlink(member, comps, t)
            if b"/".join(_components(link_candidates[-1])) in self._symlinks:
                self._add_symlink(member, comps)  # a hard link to a symlink is that symlink
            else:
                self._symlinks.discard(b"/".join(comps))
            self._after_data(0)
        elif kind == _DUMPDIR_T:
            self._dd.clear()
            self._dd_member = member
            self._pad = _padded(size) - size
            if size:
                self._state = _DUMPDIR
                self._left = size
            else:
                self._after_data(0)
        elif kind == _SPARSE_T:
            if block[482]:
                self._state = _SPARSE
                self._left = size
            else:
                self._after_data(size)
        elif kind == _LABEL:
            self._after_data(size)
        elif kind in _SPECIAL_NAMES:
            raise self._refuse(
                member, f"{_SPECIAL_NAMES[kind]}: device files and FIFOs are refused"
            )
        else:
            raise self._refuse(member, f"unsupported member type {bytes([kind])!r}")

    def _no_data(self, member: bytes, size: int, what: str) -> None:
        if size:
            raise self._refuse(member, f"{what} header claims {size} bytes of data")

    def _check_symlink(self, member: bytes, comps: list[bytes], target: bytes) -> None:
        if not target:
            raise self._refuse(member, "symlink with an empty target")
        if target.startswith(b"/"):
            if not self._absolute_symlinks:
                raise self._refuse(member, f"symlink to an absolute path {_show(target)}")
            return
        where = comps[:-1]
        for c in target.split(b"/"):
            if not c or c == b".":
                continue
            if c != b"..":
                where.append(c)
                continue
            if not where:
                raise self._refuse(
                    member, f"symlink target {_show(target)} climbs out of the archive root"
                )
            left = b"/".join(where)
            if left in self._symlinks:
                raise self._refuse(
                    member,
                    f"symlink target {_show(target)} climbs with '..' out of {_show(left)}, "
                    "itself a symlink in this archive",
                )
            self._popped.setdefault(left, member)
            where.pop()

    def _add_symlink(self, member: bytes, comps: list[bytes]) -> None:
        key = b"/".join(comps)
        earlier = self._popped.get(key)
        if earlier is not None and earlier != member:
            raise self._refuse(
                member,
                f"the earlier symlink {_show(earlier)} climbs with '..' out of this path, "
                "which this member makes a symlink",
            )
        self._symlinks.add(key)

    def _check_hardlink(self, member: bytes, comps: list[bytes], target: bytes) -> None:
        if not target:
            raise self._refuse(member, "hard link with an empty target")
        if target.startswith(b"/"):
            raise self._refuse(member, f"hard link to an absolute path {_show(target)}")
        tcomps = _components(target)
        if b".." in tcomps:
            raise self._refuse(member, f"hard link target {_show(target)} has a '..' component")
        if not tcomps:
            raise self._refuse(member, "hard link to the archive root")
        self._below_symlink(tcomps, member, f"hard link target {_show(target)}")
        if self._allowed is not None and not self._in_allowed(tcomps):
            raise self._refuse(
                member, f"hard link target {_show(target)} is not a path this snapshot recorded"
            )
        if self._patterns is not None and not self._in_patterns(tcomps):
            raise self._refuse(
                member,
                f"hard link target {_show(target)} is outside the source's configured paths",
            )

    # -- GNU incremental dumpdirs ------------------------------------------------

    def _dumpdir_bytes(self, data: bytes) -> None:
        self._dd += data
        if b"\0" not in data:
            if len(self._dd) > DUMPDIR_ENTRY_LIMIT:
                raise self._refuse(self._dd_member, "dumpdir entry too long")
            return
        *entries, rest = bytes(self._dd).split(b"\0")
        self._dd = bytearray(rest)
        for e in entries:
            self._dumpdir_entry(e)

    def _dumpdir_entry(self, entry: bytes) -> None:
        if not entry:
            return  # the list's terminator
        code, arg = entry[:1], entry[1:]
        member = self._dd_member
        if code in (b"Y", b"N", b"D"):
            if not arg or b"/" in arg or arg in (b".", b".."):
                raise self._refuse(member, f"dumpdir entry {_show(entry)} is not one plain name")
        elif code in (b"R", b"T", b"X"):
            if arg.startswith(b"/") or b".." in _components(arg):
                raise self._refuse(
                    member, f"dumpdir rename entry {_show(entry)} leaves the archive"
                )
            comps = _components(arg)
            self._below_symlink(comps, member, f"dumpdir entry {_show(entry)}")
            if b"/".join(comps) in self._symlinks:
                raise self._refuse(member, f"dumpdir entry {_show(entry)} renames a symlink")
        else:
            raise self._refuse(member, f"unknown dumpdir entry {_show(entry)}")

    def _dumpdir_done(self) -> None:
        if self._dd:
            raise self._refuse(self._dd_member, "dumpdir ends inside an entry")
        self._skip(self._pad)


def check_tar(
    src: Readable,
    name: str,
    *,
    allowed: Iterable[str] | None = None,
    absolute_symlinks: bool = False,
    state: GuardState | None = None,
    patterns: Iterable[str] | None = None,
) -> int:
    """Read *src* to its end through a `TarGuard`; return the byte count (tests, tools)."""
    guard = TarGuard(
        src,
        name,
        allowed=allowed,
        absolute_symlinks=absolute_symlinks,
        state=state,
        patterns=patterns,
    )
    total = 0
    while True:
        chunk = guard.read(CHUNK)
        if not chunk:
            return total
        total += len(chunk)
