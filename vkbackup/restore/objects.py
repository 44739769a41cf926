"""Restore-side readers of tar objects: verified, decrypted, decompressed here, and
checked by `vkbackup.targuard` before a byte reaches the target.

    storage get -> VerifyingReader (size, sha256) -> DecryptingReader (age)
                -> gunzip / unzstd (streaming, bounded) -> TarGuard -> target

Two ways to hand the checked archive to the target; both refuse a hostile
member before the chunk that completes its header leaves this machine:

- `open_plain_tar`: the *decompressed* tar. The target extracts it as is:
  restore with ``restore_script(..., compression="none")``. Costs bandwidth
  (the tar crosses the SSH link uncompressed).
- `open_checked_object`: the object's plaintext *as stored* (still compressed),
  each chunk released only after everything it decompresses to passed the
  guard (a shadow decompression: the target's gzip, fed the same bytes, can
  produce nothing the guard has not seen). Restore with
  ``restore_script(..., obj.compression)``, unchanged.

Memory is bounded: decoder output is taken at most CHUNK bytes at a time (a
gzip or zstd bomb costs time, not memory), a zstd frame may ask for a window
of at most 2^ZSTD_WINDOW_LOG_MAX bytes (32 MiB; the host's `zstd -3` uses
2 MiB, `-19` 8 MiB; a larger one is refused as corrupt), and the guard holds
no member data.
zstd is Python 3.14's `compression.zstd` (the `backports.zstd` package before
3.14, the same code).

Interface:
    Gunzip(name), Unzstd(name)     streaming decoders: .feed(data) -> Iterator[bytes], .end()
    decoder(compression, name)     one of them for "gzip"/"zstd", None for "none"
    DecodingReader(src, dec)       Readable of the decompressed bytes of a compressed Readable
    open_plain_tar(storage, obj, identities, *, allowed=None, absolute_symlinks=True,
                   state=None) -> CheckedStream        the decompressed, guarded tar
    open_checked_object(storage, obj, identities, *, allowed=None, absolute_symlinks=True,
                        state=None) -> CheckedStream   the stored plaintext, shadow-checked
        *state*: one GuardState shared by the objects of one volume's incremental
        chain, in order (a fresh one per volume).
    guard_options(step_kind, members) -> dict   the guard settings for a restore step:
                                   files: allowed=members; volume: the volume is the root
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from vkbackup.crypto import DecryptingReader, Identity
from vkbackup.errors import IntegrityError, RestoreError
from vkbackup.manifest import ObjectRecord
from vkbackup.storage.base import ReadStream, Storage
from vkbackup.streams import CHUNK, Readable, VerifyingReader
from vkbackup.targuard import GuardState, TarGuard

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


class CheckedStream:
    """A Readable that closes the storage stream under it (use `with` or close())."""

    def __init__(self, reader: Readable, raw: ReadStream, guard: TarGuard) -> None:
        self._reader = reader
        self._raw = raw
        self.guard = guard

    def read(self, n: int = -1, /) -> bytes:
        return self._reader.read(n)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> CheckedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _plaintext(
    storage: Storage, obj: ObjectRecord, identities: Sequence[Identity]
) -> tuple[ReadStream, Readable]:
    raw = storage.open(obj.key)
    try:
        plain = DecryptingReader(
            VerifyingReader(raw, obj.size, obj.sha256, obj.key), identities, name=obj.key
        )
    except BaseException:
        raw.close()
        raise
    return raw, plain


def open_plain_tar(
    storage: Storage,
    obj: ObjectRecord,
    identities: Sequence[Identity],
    *,
    allowed: Iterable[str] | None = None,
    absolute_symlinks: bool = True,
    state: GuardState | None = None,
) -> CheckedStream:
    """Given a tar object, return its decompressed tar, verified against the manifest,
    authenticated by age and checked by TarGuard as it is read. Feed it to a restore
    script built with compression "none"."""
    dec = decoder(obj.compression, obj.key)
    raw, plain = _plaintext(storage, obj, identities)
    tar: Readable = DecodingReader(plain, dec) if dec else plain
    guard = TarGuard(
        tar, obj.key, allowed=allowed, absolute_symlinks=absolute_symlinks, state=state
    )
    return CheckedStream(guard, raw, guard)


def open_checked_object(
    storage: Storage,
    obj: ObjectRecord,
    identities: Sequence[Identity],
    *,
    allowed: Iterable[str] | None = None,
    absolute_symlinks: bool = True,
    state: GuardState | None = None,
) -> CheckedStream:
    """Given a tar object, return its plaintext as stored (compressed as recorded),
    verified, authenticated, and released chunk by chunk only once TarGuard passed
    what the chunk decompresses to. Feed it to a restore script built with
    obj.compression, as before."""
    decoder(obj.compression, obj.key)  # an unknown compression is refused before any read
    raw, plain = _plaintext(storage, obj, identities)
    guard = TarGuard(
        plain, obj.key, allowed=allowed, absolute_symlinks=absolute_symlinks, state=state
    )
    return CheckedStream(_ShadowChecked(plain, obj.compression, guard, obj.key), raw, guard)


def guard_options(step_kind: str, members: Sequence[str] | None = None) -> dict[str, Any]:
    """Given a restore step kind ("files" or "volume") and, for files, the recorded
    member paths, return the keyword arguments for open_plain_tar/open_checked_object.

    Both allow absolute symlink targets: a volume's name paths inside the container
    that mounts it (the lab's volume has two), a files source's name paths on the
    host, where they pointed before. Neither can be written through: the guard
    refuses any member below a symlink of the archive."""
    if step_kind == "files":
        return {"allowed": list(members or []), "absolute_symlinks": True}
    if step_kind == "volume":
        return {"allowed": None, "absolute_symlinks": True}
    raise ValueError(f"no tar guard for restore steps of kind {step_kind!r}")
