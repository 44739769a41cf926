"""[[copies]] (issue 17, copies 3-2-1): parsed by the [storage] parser itself, so
errors name `copies[N].key`; names checked and unique; each copy's retention its
own or the main one; [snapshot] copy_after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vkbackup.config import parse_config
from vkbackup.config.load import holds_credential
from vkbackup.config.model import ObjectLock, RetentionConfig
from vkbackup.errors import ConfigError

S3 = {"type": "s3", "bucket": "offsite", "endpoint_url": "https://s3.example"}


def parse(**doc: Any) -> Any:
    return parse_config(doc, "vk.toml")


def test_copies_with_own_and_inherited_retention() -> None:
    cfg = parse(
        storage={"path": "/srv/backups"},
        retention={"keep_daily": 7},
        copies=[
            {"name": "usb", "path": "/mnt/usb/vk"},
            {
                **S3,
                "name": "offsite",
                "object_lock": {"mode": "compliance", "days": 90},
                "retention": {"keep_monthly": 12},
            },
        ],
        snapshot={"copy_after": True},
    )
    usb, offsite = cfg.copies
    assert usb.name == "usb" and usb.storage.path == Path("/mnt/usb/vk")
    assert usb.retention == RetentionConfig(keep_daily=7)  # the main [retention]
    assert offsite.storage.bucket == "offsite"
    assert offsite.storage.object_lock == ObjectLock("compliance", 90)
    assert offsite.retention == RetentionConfig(keep_monthly=12)
    assert cfg.copy_named("offsite") is offsite and cfg.copy_named("nope") is None
    assert cfg.snapshot.copy_after is True


def test_no_copies_by_default() -> None:
    cfg = parse()
    assert cfg.copies == () and cfg.snapshot.copy_after is False


@pytest.mark.parametrize(
    ("copies", "where"),
    [
        ([{"name": "a", "path": "/a"}, {"name": "b", "type": "s3"}], "copies[1].bucket"),
        ([{"name": "a", "path": "/a", "bucket": "x"}], "copies[0].bucket"),
        ([{"name": "a", "path": "/a", "buckt": "x"}], "copies[0].buckt"),
        ([{"path": "/a"}], "copies[0].name"),
        ([{"name": "no/slash", "path": "/a"}], "copies[0].name"),
        ([{"name": "a", "path": "/a"}, {"name": "a", "path": "/b"}], "copies[1].name"),
        ([{"name": "a", "path": "/a", "retention": {"keep_dayly": 1}}], "copies[0].retention"),
        ([{**S3, "name": "a", "object_lock": {"mode": "x", "days": 1}}], "copies[0].object_lock"),
        ([{**S3, "name": "a", "part_size_mib": 2}], "copies[0].part_size_mib"),
        ([{"name": "a", "path": "/srv/backups"}], "copies[0]"),  # the main storage itself
        ([{"name": "a", "path": "/a"}, {"name": "b", "path": "/a"}], "copies[1]"),
    ],
)
def test_errors_name_the_key_path(copies: list[dict[str, Any]], where: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(storage={"path": "/srv/backups"}, copies=copies)
    assert f"vk.toml: {where}" in str(e.value)


def test_copies_must_be_an_array_of_tables() -> None:
    with pytest.raises(ConfigError, match=r"copies: must be an array of tables"):
        parse(copies={"name": "a"})


def test_a_copy_credential_counts_for_the_file_mode_check() -> None:
    cfg = parse(
        copies=[{**S3, "name": "a", "access_key_id": "AK", "secret_access_key": "very-secret"}]
    )
    assert holds_credential(cfg)
