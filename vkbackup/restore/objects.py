"""The one way restore, deep verify and the e2e oracle's peers open a stored object:
verified, decrypted, decompressed here when asked, and checked by
`vkbackup.restore.targuard` before a byte reaches the target.

    storage get -> VerifyingReader (size, sha256) -> DecryptingReader (age)
                -> gunzip / unzstd (streaming, bounded) -> TarGuard -> target

A tar object can cross to the target two ways; both refuse a hostile member
before the chunk that completes its header leaves this machine:

- decompressed here: the target extracts it as is (restore scripts built with
  compression "none"). Costs bandwidth (the tar crosses the SSH link
  uncompressed); used when the target lacks the decompressor.
- as stored (still compressed), each chunk released only after everything it
  decompresses to passed the guard (a shadow decompression: the target's gzip,
  fed the same bytes, can produce nothing the guard has not seen).

Every stream closes the storage stream under it, so a step that fails halfway
leaves no open HTTP connection or file behind.

Memory is bounded: decoder output is taken at most CHUNK bytes at a time (a
gzip or zstd bomb costs time, not memory), a zstd frame may ask for a window
of at most 2^ZSTD_WINDOW_LOG_MAX bytes (32 MiB; the host's `zstd -3` uses
2 MiB, `-19` 8 MiB; a larger one is refused as corrupt), and the guard holds
no member data.
zstd is Python 3.14's `compression.zstd` (the `backports.zstd` package before
3.14, the same code).
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vkbackup.crypto import DecryptingReader, Identity
from vkbackup.errors import IntegrityError, RestoreError
from vkbackup.manifest import ObjectRecord
from vkbackup.restore.targuard import GuardState, TarGuard
from vkbackup.storage.base import ReadStream, Storage
from vkbackup.streams import CHUNK, Readable, VerifyingReader

if sys.version_info >= (3, 14):  # pragma: no cover - the standard library from 3.14 on
    from compression import zstd  # type: ignore[import-not-found, unused-ignore]
else:
    from backports import zstd

GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip container only
ZSTD_WINDOW_LOG_MAX = 25  # 32 MiB: the most memory one zstd stream may ask for


class Decoder(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes]: ...

    def end(self) -> None: ...


class Gunzip:
    """Streaming gzip decoder: concatenated members, bounded output pieces, strict end."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._d = zlib.decompressobj(GZIP_WBITS)
        self._fed = False  # bytes given to the current member's decoder
        self._members = 0

    def _error(self, why: str) -> IntegrityError:
        return IntegrityError(f"{self._name}: gzip stream {why}")

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Given the next compressed bytes, yield the decompressed bytes (pieces of at
        most CHUNK bytes). Raise IntegrityError on corrupt or trailing data."""
        while data:
            self._fed = True
            try:
                out = self._d.decompress(data, CHUNK)
            except zlib.error as e:
                if self._members:
                    raise self._error(f"has trailing data that is not gzip ({e})") from None
                raise self._error(f"is corrupt: {e}") from None
            data = self._d.unconsumed_tail
            if out:
                yield out
            if self._d.eof:
                self._members += 1
                data = self._d.unused_data + data
                self._d = zlib.decompressobj(GZIP_WBITS)
                self._fed = False
        # output pending inside zlib once all input is consumed (a long match)
        while not self._d.eof and self._fed:
            try:
                out = self._d.decompress(b"", CHUNK)
            except zlib.error as e:  # pragma: no cover - zlib reports at feed time
                raise self._error(f"is corrupt: {e}") from None
            if not out:
                break
            yield out

    def end(self) -> None:
        """The compressed stream ended: raise IntegrityError if a member is unfinished."""
        if self._fed:
            raise self._error("is truncated (ends inside a member)")
        if not self._members:
            raise self._error("is empty")


class Unzstd:
    """Streaming zstd decoder: concatenated frames, bounded output pieces, strict end."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._d = self._decompressor()
        self._fed = False  # bytes given to the current frame's decoder
        self._frames = 0

    @staticmethod
    def _decompressor() -> zstd.ZstdDecompressor:
        return zstd.ZstdDecompressor(
            options={zstd.DecompressionParameter.window_log_max: ZSTD_WINDOW_LOG_MAX}
        )

    def _error(self, why: str) -> IntegrityError:
        return IntegrityError(f"{self._name}: zstd stream {why}")

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Given the next compressed bytes, yield the decompressed bytes (pieces of at
        most CHUNK bytes). Raise IntegrityError on corrupt or trailing data."""
        while True:
            if self._d.eof:
                self._frames += 1
                data = self._d.unused_data + data
                self._d = self._decompressor()
                self._fed = False
            if not data and (self._d.needs_input or not self._fed):
                return
            if data:
                self._fed = True
            try:
                out = self._d.decompress(data, CHUNK)
            except zstd.ZstdError as e:
                if self._frames and not data.startswith(b"\x28\xb5\x2f\xfd"):
                    raise self._error(f"has trailing data that is not zstd ({e})") from None
                raise self._error(f"is corrupt: {e}") from None
            data = b""
            if out:
                yield out

    def end(self) -> None:
        """The compressed stream ended: raise IntegrityError if a frame is unfinished."""
        if self._fed and not self._d.eof:
            raise self._error("is truncated (ends inside a frame)")
        if not self._frames and not self._d.eof:
            raise self._error("is empty")


def decoder(compression: str, name: str) -> Decoder | None:
    """The streaming decoder for an object's recorded compression (None: stored plain)."""
    if compression == "gzip":
        return Gunzip(name)
    if compression == "zstd":
        return Unzstd(name)
    if compression == "none":
        return None
    raise RestoreError(f"{name}: unknown compression {compression!r} in the manifest")


class DecodingReader:
    """Readable of the decompressed bytes of the compressed Readable *src*."""

    def __init__(self, src: Readable, dec: Decoder) -> None:
        self._src = src
        self._dec = dec
        self._pieces: Iterator[bytes] = iter(())
        self._left = b""
        self._done = False

    def read(self, n: int = -1, /) -> bytes:
        limit = n if n and n > 0 else CHUNK
        while not self._left:
            piece = next(self._pieces, None)
            if piece is not None:
                self._left = piece
                break
            if self._done:
                return b""
            data = self._src.read(CHUNK)
            if not data:
                self._done = True
                self._dec.end()
                return b""
            self._pieces = self._dec.feed(data)
        out, self._left = self._left[:limit], self._left[limit:]
        return out


class _ShadowChecked:
    """Pass the stored (compressed) bytes through unchanged, each chunk only after its
    decompressed bytes went through the guard."""

    def __init__(self, src: Readable, compression: str, guard: TarGuard, name: str) -> None:
        self._src = src
        self._guard = guard
        self._gz = decoder(compression, name)

    def read(self, n: int = -1, /) -> bytes:
        data = self._src.read(n)
        if self._gz is None:
            if data:
                self._guard.feed(data)
            else:
                self._guard.finish()
            return data
        if data:
            for piece in self._gz.feed(data):
                self._guard.feed(piece)
        else:
            self._gz.end()
            self._guard.finish()
        return data


@dataclass(frozen=True)
class PlainCheck:
    """An object's plaintext as the snapshot that uploaded it recorded it in its
    private part: size and sha256 of the bytes age decrypts to."""

    size: int
    sha256: str


@dataclass(frozen=True)
class TarCheck:
    """How the tar guard checks one tar object: *allowed* limits members to those
    paths (a files source's recorded paths; None: anything below the root, a
    volume); *patterns*, when set, also limits them to matches of those globs or
    paths below one (a files source's configured patterns: the recorded paths came
    from the host, which may have listed more than was configured, and a forged
    manifest could list anything; the patterns bound both); *state* is shared by
    the objects of one volume's incremental chain, in order, so a symlink left by
    one level is never written through by a later one.

    Both kinds allow absolute symlink targets: a volume's name paths inside the
    container that mounts it (the lab's volume has two), a files source's name
    paths on the host, where they pointed before. Neither can be written
    through: the guard refuses any member below a symlink of the archive."""

    allowed: tuple[str, ...] | None = None
    absolute_symlinks: bool = True
    state: GuardState | None = field(default=None, compare=False)
    patterns: tuple[str, ...] | None = None

    @classmethod
    def files(cls, members: Iterable[str], patterns: Iterable[str] | None = None) -> TarCheck:
        return cls(allowed=tuple(members), patterns=None if patterns is None else tuple(patterns))

    @classmethod
    def volume(cls, state: GuardState | None = None) -> TarCheck:
        return cls(allowed=None, state=state)


class ObjectStream:
    """A Readable of one object's plaintext that closes the storage stream under it
    (use `with`, or close()). *guard* is the TarGuard when one checks it."""

    def __init__(self, reader: Readable, raw: ReadStream, guard: TarGuard | None) -> None:
        self._reader = reader
        self._raw = raw
        self.guard = guard

    def read(self, n: int = -1, /) -> bytes:
        return self._reader.read(n)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> ObjectStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_object(
    storage: Storage,
    obj: ObjectRecord,
    identities: Sequence[Identity],
    *,
    tar: TarCheck | None = None,
    decompress: bool = False,
    expect: PlainCheck | None = None,
) -> ObjectStream:
    """Given an object record, return its plaintext, verified against the manifest
    (size and sha256) and authenticated by age as it is read: the read that would
    return the last byte raises IntegrityError instead if anything is wrong.

    *decompress*: hand out the decompressed bytes (for a target without the
    decompressor; restore with compression "none"); else the bytes as stored.
    *tar*: the object is a tar: check every header with TarGuard. Decompressed,
    the guard reads the stream it hands out; as stored, each chunk is released only
    once everything it decompresses to passed the guard (a shadow decompression:
    the target's gzip or zstd, fed the same bytes, can produce nothing the guard
    has not seen).

    *expect*: the plaintext's size and sha256 as the private part recorded them
    (the bytes age decrypts to, before decompression), checked the same way:
    the read that would return the last byte raises IntegrityError instead.

    Raise RestoreError for an unknown compression before anything is read."""
    dec = decoder(obj.compression, obj.key)
    raw = storage.open(obj.key)
    try:
        plain: Readable = DecryptingReader(
            VerifyingReader(raw, obj.size, obj.sha256, obj.key), identities, name=obj.key
        )
    except BaseException:
        raw.close()
        raise
    if expect is not None:
        plain = VerifyingReader(plain, expect.size, expect.sha256, f"{obj.key} (plaintext)")
    if decompress and dec is not None:
        plain = DecodingReader(plain, dec)
    if tar is None:
        return ObjectStream(plain, raw, None)
    guard = TarGuard(
        plain,
        obj.key,
        allowed=tar.allowed,
        absolute_symlinks=tar.absolute_symlinks,
        state=tar.state,
        patterns=tar.patterns,
    )
    if decompress or dec is None:
        return ObjectStream(guard, raw, guard)
    return ObjectStream(_ShadowChecked(plain, obj.compression, guard, obj.key), raw, guard)


READ_LIMIT = 64 * 1024 * 1024


def read_object(
    storage: Storage,
    obj: ObjectRecord,
    identities: Sequence[Identity],
    expect: PlainCheck | None = None,
) -> bytes:
    """Given a small object (roles SQL), return its verified plaintext (and checked
    against *expect*, see open_object). Raise IntegrityError for one over
    READ_LIMIT bytes: nothing large is held in memory."""
    if obj.size > READ_LIMIT:
        raise IntegrityError(f"{obj.key}: too large to hold in memory ({obj.size} bytes)")
    with open_object(storage, obj, identities, expect=expect) as stream:
        return b"".join(iter(lambda: stream.read(CHUNK), b""))
