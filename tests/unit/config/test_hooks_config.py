"""[hosts.NAME.hooks]: types checked, unknown keys refused with their key path,
timeout as seconds or a duration string."""

from __future__ import annotations

from typing import Any

import pytest

from vkbackup.config import parse_config
from vkbackup.config.model import HooksConfig
from vkbackup.errors import ConfigError


def hooks(table: dict[str, Any]) -> HooksConfig:
    cfg = parse_config({"hosts": {"prod": {"address": "a", "hooks": table}}}, "t.toml")
    return cfg.hosts["prod"].hooks


def test_defaults_without_a_hooks_table() -> None:
    cfg = parse_config({"hosts": {"prod": {"address": "a"}}}, "t.toml")
    assert cfg.hosts["prod"].hooks == HooksConfig()
    assert HooksConfig().timeout == 600.0 and HooksConfig().before_snapshot == ()


def test_every_key() -> None:
    h = hooks(
        {
            "before_snapshot": ["a", "b"],
            "after_snapshot": ["c"],
            "before_restore": ["d"],
            "after_restore": ["e"],
            "on_failure": ["f"],
            "timeout": "1h30m",
        }
    )
    assert h == HooksConfig(("a", "b"), ("c",), ("d",), ("e",), ("f",), 5400.0)


@pytest.mark.parametrize(
    ("value", "seconds"), [(90, 90.0), (2.5, 2.5), ("90s", 90.0), ("10m", 600.0), ("1h", 3600.0)]
)
def test_timeout_forms(value: object, seconds: float) -> None:
    assert hooks({"timeout": value}).timeout == seconds


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"befor_snapshot": ["x"]}, "hosts.prod.hooks.befor_snapshot: unknown key (did you mean"),
        ({"before_snapshot": "x"}, "hosts.prod.hooks.before_snapshot: must be a list of strings"),
        ({"after_restore": ["ok", 3]}, "hosts.prod.hooks.after_restore: [1] must be a non-empty"),
        ({"on_failure": [" "]}, "hosts.prod.hooks.on_failure: [0] must be a non-empty string"),
        ({"on_failure": ["a\x00b"]}, "hosts.prod.hooks.on_failure: [0] must not contain a NUL"),
        ({"timeout": "10 minutes"}, 'hosts.prod.hooks.timeout: must be seconds or a duration like'),
        ({"timeout": ""}, "hosts.prod.hooks.timeout: must be seconds or a duration"),
        ({"timeout": True}, "hosts.prod.hooks.timeout: must be seconds or a duration string, got"),
        ({"timeout": 0}, "hosts.prod.hooks.timeout: must be between 1 second and 24 hours"),
        ({"timeout": "25h"}, "hosts.prod.hooks.timeout: must be between 1 second and 24 hours"),
    ],
)  # fmt: skip
def test_errors_name_the_key_path(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        hooks(table)
    assert str(exc.value).startswith("t.toml: " + message), str(exc.value)


def test_hooks_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"hosts\.prod\.hooks: must be a table"):
        parse_config({"hosts": {"prod": {"address": "a", "hooks": ["x"]}}}, "t.toml")
