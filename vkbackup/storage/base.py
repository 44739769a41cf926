"""The storage interface: named byte streams, nothing about snapshots.

Keys are '/'-separated relative names (e.g. ``data/prod/20261126T020000Z/db.age``).
A backend applies its own prefix (S3 prefix, local directory) itself.

Every backend implements `Storage`. An object becomes visible only complete
(S3 multipart completes / local rename); on any failure nothing is left
half-visible (multipart aborted / temp removed). A partly consumed stream is
never retried from the middle.

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
    """Given an object key, return it unchanged; raise StorageError naming it if
    it is not a clean relative '/'-separated name (empty, absolute, '.'/'..'/empty
    segments, NUL, backslash, over MAX_KEY_BYTES bytes)."""
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
    """Given a prefix ('' or 'a/b', no slashes at the ends) and a key, return
    "prefix/key" (the key alone when the prefix is empty)."""
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
    ) -> ObjectInfo:
        """Stream *src* (unknown length; *size_hint* an estimate) into *key* and
        return the stored object's info. With *if_absent*, raise
        ObjectExistsError if the key exists (locks)."""
        ...

    def open(self, key: str) -> ReadStream:
        """Return a streaming read of *key*; raise ObjectNotFoundError if it is missing."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """Return *key*'s info, or None if it is missing."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with *prefix*, in any order."""
        ...

    def delete(self, key: str) -> None:
        """Delete *key*; a missing key is not an error."""
        ...

    def describe(self) -> str:
        """Return the location for messages: "s3://bucket/prefix" or "/var/backups/vkbackup"."""
        ...

    def retention_until(self, key: str) -> datetime | None:
        """Return *key*'s Object Lock retain-until date (None: not locked). Raise
        ObjectNotFoundError if the key is missing."""
        ...

    def extend_retention(self, key: str) -> datetime | None:
        """With Object Lock, make *key*'s retention last at least the configured
        days from now, never shortening it (for objects a new snapshot reuses);
        return the retain-until in force (None without Object Lock)."""
        ...

    def list_incomplete_uploads(self) -> builtins.list[tuple[str, str, datetime]]:
        """Return every upload that never finished as (key, upload id, started)."""
        ...

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Remove an upload reported by list_incomplete_uploads."""
        ...
