"""Byte-stream plumbing shared by every pipeline: pull-based readers, bounded.

Every stage of a pipeline is a `Readable`: an object with ``read(n) -> bytes``
that returns b"" only at the end. Stages wrap each other
(remote stdout -> compress -> encrypt -> hash -> storage.put), so memory is
bounded by the chunk sizes, never by the data size.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Protocol, Self

CHUNK = 1024 * 1024


class Readable(Protocol):
    """A byte source: ``read(n)`` returns up to *n* bytes (all the rest when
    *n* < 0), and b"" only at the end."""

    def read(self, n: int = -1, /) -> bytes: ...


def read_exact(src: Readable, n: int) -> bytes:
    """Read until *n* bytes or EOF (short only at EOF)."""
    parts: list[bytes] = []
    remaining = n
    while remaining > 0:
        chunk = src.read(remaining)
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def iter_chunks(src: Readable, size: int = CHUNK) -> Iterator[bytes]:
    """Yield the chunks of *src* (at most *size* bytes each) until its end."""
    while True:
        chunk = src.read(size)
        if not chunk:
            return
        yield chunk


def copy_stream(src: Readable, write: Callable[[bytes], object], size: int = CHUNK) -> int:
    """Pass every chunk of *src* to *write* and return the number of bytes copied."""
    total = 0
    for chunk in iter_chunks(src, size):
        write(chunk)
        total += len(chunk)
    return total


class HashingReader:
    """Pass-through reader that counts bytes (``.size``) and computes the sha256
    (``.sha256_hex()``) of what it returned."""

    def __init__(self, src: Readable) -> None:
        self._src = src
        self._h = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._src.read(n)
        if data:
            self._h.update(data)
            self.size += len(data)
        return data

    def sha256_hex(self) -> str:
        return self._h.hexdigest()


class BytesReader:
    """A Readable over bytes held in memory (small objects and tests only)."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read(self, n: int = -1, /) -> bytes:
        if n is None or n < 0:
            n = len(self._data) - self._pos
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += len(out)
        return out


class VerifyingReader:
    """Pass-through reader that checks size and sha256 at the end of *src*.

    On a mismatch, the final read raises IntegrityError (naming *name*)
    instead of reporting EOF, so a consumer downstream (e.g. the age
    decryptor, which releases its last chunk only at EOF) never completes
    with data that is not the recorded object.
    """

    def __init__(self, src: Readable, size: int, sha256_hex: str, name: str) -> None:
        self._inner = HashingReader(src)
        self._size = size
        self._sha = sha256_hex
        self._name = name

    def read(self, n: int = -1, /) -> bytes:
        data = self._inner.read(n)
        if data:
            if self._inner.size > self._size:
                raise self._error()
            return data
        if self._inner.size != self._size or self._inner.sha256_hex() != self._sha:
            raise self._error()
        return b""

    def _error(self) -> Exception:
        from vkbackup.errors import IntegrityError

        return IntegrityError(
            f"{self._name}: stored object does not match the manifest (expected {self._size} "
            f"bytes, sha256 {self._sha[:16]}...; read {self._inner.size} bytes"
            + (f", sha256 {self._inner.sha256_hex()[:16]}...)" if self._inner.size else ")")
            + ": it is damaged, truncated or was swapped"
        )


#: the smallest bucket of a RateLimiter: one 64 KiB chunk
MIN_BURST = 64 * 1024


class RateLimiter:
    """A token bucket shared by every stream of one run (thread-safe): at most
    *bytes_per_second* on average, and never more than one bucket at once.

    The bucket holds ``burst`` bytes: by default 100 ms worth of bytes or one
    64 KiB chunk, whichever is larger; it starts full. `take` charges bytes
    already read: the tokens may go negative (a debt), and the caller sleeps
    until the debt is repaid, outside the lock, so a second stream that takes
    meanwhile sees the debt and sleeps longer. Hence in any window of T
    seconds at most ``burst + T * bytes_per_second`` bytes are handed out, by
    all the streams together. *clock* and *sleep* are injectable for tests."""

    def __init__(
        self,
        bytes_per_second: float,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if not bytes_per_second > 0:
            raise ValueError(f"rate must be positive, got {bytes_per_second!r}")
        self.rate = float(bytes_per_second)
        self.burst = burst if burst else max(int(self.rate / 10), MIN_BURST)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(self.burst)
        self._last = clock()

    def take(self, n: int) -> float:
        """Charge *n* bytes; sleep until the bucket is no longer in debt. Return
        the seconds slept."""
        if n <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._last)
            self._last = now
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate) - n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class RateLimitedReader:
    """Pass-through reader that hands its bytes out no faster than *limit* (a
    shared RateLimiter, or bytes per second for a limiter of its own, built with
    *clock* and *sleep*). A read returns at most one bucket (so the pace is
    smooth, not bursts of a whole chunk); nothing is buffered. ``close`` and
    ``with`` pass through to *src* (a storage ReadStream)."""

    def __init__(
        self,
        src: Readable,
        limit: RateLimiter | float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._src = src
        self.limiter = (
            limit
            if isinstance(limit, RateLimiter)
            else RateLimiter(limit, clock=clock, sleep=sleep)
        )

    def read(self, n: int = -1, /) -> bytes:
        if n is None or n < 0:  # all the rest: still paced, bucket by bucket
            return b"".join(iter_chunks(self, self.limiter.burst))
        data = self._src.read(min(n, self.limiter.burst))
        self.limiter.take(len(data))
        return data

    def close(self) -> None:
        close = getattr(self._src, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None:
        self.close()
