"""Storage backends: named byte streams in S3 or a local directory.

The interface is `vkbackup.storage.base`. The backends, LocalStorage and
S3Storage, are imported lazily: boto3 is slow to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vkbackup.config.model import StorageConfig
from vkbackup.errors import ConfigError
from vkbackup.storage.base import ObjectInfo, ReadStream, Storage

if TYPE_CHECKING:
    from vkbackup.storage.local import LocalStorage
    from vkbackup.storage.s3 import S3Storage

__all__ = ["LocalStorage", "ObjectInfo", "ReadStream", "S3Storage", "Storage", "open_storage"]


def open_storage(
    cfg: StorageConfig, *, create: bool = True, copy_name: str | None = None
) -> Storage:
    """Given the storage config, return the backend it describes: type "local" a
    LocalStorage at cfg.path / cfg.prefix (its directory created on first write
    only if *create*, else it must exist; *copy_name*, the [[copies]] table it
    comes from, words the error when it is missing), type "s3"
    S3Storage.from_config(cfg) (no request is made yet; a bucket is never
    created). Raise ConfigError for any other type."""
    if cfg.type == "local":
        from vkbackup.storage.local import LocalStorage

        root = cfg.path.joinpath(*cfg.prefix.split("/")) if cfg.prefix else cfg.path
        return LocalStorage(root, create=create, copy_name=copy_name)
    if cfg.type == "s3":
        from vkbackup.storage.s3 import S3Storage

        return S3Storage.from_config(cfg)
    raise ConfigError(f"storage.type: unknown storage type {cfg.type!r} (expected local or s3)")


def __getattr__(name: str) -> object:
    if name == "LocalStorage":
        from vkbackup.storage.local import LocalStorage

        return LocalStorage
    if name == "S3Storage":
        from vkbackup.storage.s3 import S3Storage

        return S3Storage
    raise AttributeError(name)
