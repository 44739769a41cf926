"""A Storage that passes every call to another one: the base of the layers that
change a few calls on the way (`vkbackup.signed_storage` signs and checks
records, `vkbackup.storage.throttled` paces bytes) and leave the rest alone."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from datetime import datetime

from vkbackup.storage.base import ObjectInfo, ReadStream, Storage
from vkbackup.streams import Readable


class StorageWrapper:
    """Every Storage call, passed to *inner* unchanged (override what changes)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    def put(
        self, key: str, src: Readable, *, size_hint: int | None = None, if_absent: bool = False
    ) -> ObjectInfo:
        return self.inner.put(key, src, size_hint=size_hint, if_absent=if_absent)

    def open(self, key: str) -> ReadStream:
        return self.inner.open(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def describe(self) -> str:
        return self.inner.describe()

    def retention_until(self, key: str) -> datetime | None:
        return self.inner.retention_until(key)

    def extend_retention(self, key: str) -> datetime | None:
        return self.inner.extend_retention(key)

    def list_incomplete_uploads(self) -> builtins.list[tuple[str, str, datetime]]:
        return self.inner.list_incomplete_uploads()

    def abort_upload(self, key: str, upload_id: str) -> None:
        self.inner.abort_upload(key, upload_id)
