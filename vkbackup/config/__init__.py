"""Configuration: TOML file -> typed, validated objects (see `load` and `model`)."""

from __future__ import annotations

from vkbackup.config.load import find_config_file, load_config, parse_config
from vkbackup.config.model import (
    Config,
    EncryptionConfig,
    HostConfig,
    RetentionConfig,
    SourceConfig,
    StorageConfig,
)

__all__ = [
    "Config",
    "EncryptionConfig",
    "HostConfig",
    "RetentionConfig",
    "SourceConfig",
    "StorageConfig",
    "find_config_file",
    "load_config",
    "parse_config",
]
