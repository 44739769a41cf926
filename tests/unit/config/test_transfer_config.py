"""[transfer]: bandwidth limits in KiB/s (issue 17); 0 or absent is no limit, and
a bad value is a ConfigError naming the file and the key path."""

from __future__ import annotations

from typing import Any

import pytest

from vkbackup.config import parse_config
from vkbackup.config.model import TransferConfig
from vkbackup.errors import ConfigError


def transfer(table: Any) -> TransferConfig:
    return parse_config({"transfer": table}, "t.toml").transfer


def test_absent_means_no_limit() -> None:
    assert parse_config({}, "t.toml").transfer == TransferConfig(0, 0)
    assert transfer({}) == TransferConfig(0, 0)


def test_both_keys() -> None:
    t = transfer({"limit_upload_kib": 4096, "limit_download_kib": 0})
    assert t == TransferConfig(limit_upload_kib=4096, limit_download_kib=0)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"limit_upload_kib": -1}, "t.toml: transfer.limit_upload_kib: must be between 0 and"),
        ({"limit_download_kib": "1M"}, "t.toml: transfer.limit_download_kib: must be an integer"),
        ({"limit_upload_kib": 1.5}, "t.toml: transfer.limit_upload_kib: must be an integer"),
        ({"limit_upload_kib": True}, "t.toml: transfer.limit_upload_kib: must be an integer"),
        ({"limit_download_kib": 2**40}, "t.toml: transfer.limit_download_kib: must be between"),
        ({"limit_upload": 10}, "t.toml: transfer.limit_upload: unknown key (did you mean"),
        ("fast", "t.toml: transfer: must be a table"),
    ],
)
def test_bad_values_are_named_by_key_path(table: Any, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        transfer(table)
    assert str(e.value).startswith(message), str(e.value)
