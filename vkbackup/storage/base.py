"""The storage interface: named byte streams, nothing about snapshots.

Keys are '/'-separated relative names (e.g. ``data/prod/20261126T020000Z/db.age``).
A backend applies its own prefix (S3 prefix, local directory) itself.

Interface (every backend implements `Storage`):
    put(key, src, *, size_hint=None, if_absent=False) -> ObjectInfo
        Stream *src* (a Readable, unknown length) into *key*. The object becomes
        visible only complete (S3 multipart completes / local rename); on any
        failure nothing is left half-visible (multipart aborted / temp removed).
        if_absent=True: fail with ObjectExistsError if the key exists (locks).
        A partly consumed stream is never retried from the middle.
    open(key) -> ReadStream         streaming get (a context manager); ObjectNotFoundError
    head(key) -> ObjectInfo | None
    list(prefix) -> Iterator[ObjectInfo]   keys under prefix, any order
    delete(key) -> None             missing key is not an error
    describe() -> str               "s3://bucket/prefix" or "/var/backups/vkbackup"
    retention_until(key) -> datetime | None   Object Lock retain-until (None: no lock)
    extend_retention(key) -> datetime | None  with Object Lock, make key's retention last
                                    at least the configured days from now (never
                                    shorter); for objects a new snapshot reuses
    list_incomplete_uploads() -> list[tuple[str, str, datetime]]   (key, upload_id, initiated)
    abort_upload(key, upload_id) -> None

Helpers shared by the backends:
    validate_key(key) -> str        the key, or StorageError naming it if it is not a
                                    clean relative name (empty, absolute, '.'/'..'/empty
                                    segments, NUL, backslash, over 1024 bytes)
    join_key(prefix, key) -> str    "prefix/key" (or key when prefix is empty)

Errors: every failure is a StorageError (ObjectNotFoundError, ObjectExistsError)
whose message names the backend location and key, and for S3 the provider's
error code and HTTP status.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from vkbackup.errors import StorageError
from vkbackup.streams import Readable

MAX_KEY_BYTES = 1024


def validate_key(key: str) -> str:
    """Given an object key, return it unchanged; raise StorageError if it is not
    a clean relative '/'-separated name."""
    problem = None
    if not key:
        problem = "is empty"
    elif key.startswith("/"):
        problem = "is absolute (starts with '/')"
    elif "\\" in key or "\0" in key:
        problem = "contains a backslash or NUL"
    elif any(seg in ("", ".", "..") for seg in key.split("/")):
        problem = "has an empty, '.' or '..' segment"
    elif len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        problem = f"is longer than {MAX_KEY_BYTES} bytes"
    if problem:
        raise StorageError(f"object key {key!r} {problem}")
    return key


def join_key(prefix: str, key: str) -> str:
    """Given a prefix ('' or 'a/b', no slashes at the ends) and a key, join them."""
    return f"{prefix}/{key}" if prefix else key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime | None = None
    etag: str | None = None


class ReadStream(Protocol):
    """What open() returns: a Readable that must be closed (usable with `with`)."""

    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...


class Storage(Protocol):
    def put(
        self, key: str, src: Readable, *, size_hint: int | None = None, if_absent: bool = False
    ) -> ObjectInfo: ...

    def open(self, key: str) -> ReadStream: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def describe(self) -> str: ...

    def retention_until(self, key: str) -> datetime | None: ...

    def extend_retention(self, key: str) -> datetime | None: ...

    def list_incomplete_uploads(self) -> builtins.list[tuple[str, str, datetime]]: ...

    def abort_upload(self, key: str, upload_id: str) -> None: ...
