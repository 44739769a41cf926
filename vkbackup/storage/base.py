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
    open(key) -> ReadStream         streaming get; raises ObjectNotFoundError
    head(key) -> ObjectInfo | None
    list(prefix) -> Iterator[ObjectInfo]   keys under prefix, any order
    delete(key) -> None             missing key is not an error
    describe() -> str               "s3://bucket/prefix" or "/var/backups/vkbackup"
    retention_until(key) -> datetime | None   Object Lock retain-until (None: no lock)
    list_incomplete_uploads() -> list[tuple[str, str, datetime]]   (key, upload_id, initiated)
    abort_upload(key, upload_id) -> None
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from vkbackup.streams import Readable


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime | None = None
    etag: str | None = None


class ReadStream(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


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

    def list_incomplete_uploads(self) -> list[tuple[str, str, datetime]]: ...

    def abort_upload(self, key: str, upload_id: str) -> None: ...
