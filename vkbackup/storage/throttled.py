"""Bandwidth limits ([transfer], --limit-upload / --limit-download): a Storage
that paces the bytes put into it and read from it.

One `ThrottledStorage` per run, so every stream of the run (a snapshot's
parallel sources) shares one `RateLimiter` per direction and the total keeps
to the limit. Upload is every byte ``put`` streams (snapshot objects, and the
small records); download is every byte read from what ``open`` returns
(restore, verify). Nothing is buffered: each read hands on at most one bucket.
"""

from __future__ import annotations

from vkbackup.config.model import TransferConfig
from vkbackup.storage.base import ObjectInfo, ReadStream, Storage
from vkbackup.storage.wrapper import StorageWrapper
from vkbackup.streams import RateLimitedReader, RateLimiter, Readable

KIB = 1024


def effective_kib(option: int | None, configured: int) -> int:
    """The limit in KiB/s: the command line's *option* when given (0: no limit,
    whatever the config says), else the *configured* one (0: no limit)."""
    return configured if option is None else option


class ThrottledStorage(StorageWrapper):
    """*inner*, with puts paced by *upload* and reads by *download* (None: not paced)."""

    def __init__(
        self,
        inner: Storage,
        *,
        upload: RateLimiter | None = None,
        download: RateLimiter | None = None,
    ) -> None:
        super().__init__(inner)
        self.upload = upload
        self.download = download

    def put(
        self, key: str, src: Readable, *, size_hint: int | None = None, if_absent: bool = False
    ) -> ObjectInfo:
        if self.upload is not None:
            src = RateLimitedReader(src, self.upload)
        return self.inner.put(key, src, size_hint=size_hint, if_absent=if_absent)

    def open(self, key: str) -> ReadStream:
        stream = self.inner.open(key)
        if self.download is None:
            return stream
        return RateLimitedReader(stream, self.download)


def throttle(
    storage: Storage,
    transfer: TransferConfig,
    *,
    upload_kib: int | None = None,
    download_kib: int | None = None,
) -> Storage:
    """*storage* paced by the limits: the options *upload_kib* / *download_kib*
    (KiB/s) when given, else *transfer*'s; *storage* itself when neither
    direction is limited."""
    up = effective_kib(upload_kib, transfer.limit_upload_kib)
    down = effective_kib(download_kib, transfer.limit_download_kib)
    if not up and not down:
        return storage
    return ThrottledStorage(
        storage,
        upload=RateLimiter(up * KIB) if up else None,
        download=RateLimiter(down * KIB) if down else None,
    )
