"""The [check] table: freshness limits as duration strings, errors naming the key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vkbackup.actions.check import Limits
from vkbackup.config import parse_config
from vkbackup.config.model import CheckConfig
from vkbackup.errors import ConfigError


def test_defaults_without_a_check_table_and_the_drill_limit_from_drill_max_age_days() -> None:
    cfg = parse_config({}, "vk.toml")
    assert cfg.check == CheckConfig(timedelta(hours=26), timedelta(days=8), None)
    assert Limits.from_config(cfg) == Limits(
        timedelta(hours=26), timedelta(days=8), timedelta(days=100)
    )
    cfg = parse_config({"drill": {"max_age_days": 30}}, "vk.toml")
    assert Limits.from_config(cfg).drill == timedelta(days=30)


def test_every_key_set() -> None:
    cfg = parse_config(
        {"check": {"max_age": "2h", "max_verify_age": "1d12h", "max_drill_age": "2w"}},
        "vk.toml",
    )
    assert cfg.check == CheckConfig(timedelta(hours=2), timedelta(hours=36), timedelta(days=14))
    assert Limits.from_config(cfg) == Limits(
        timedelta(hours=2), timedelta(hours=36), timedelta(days=14)
    )


def test_only_one_key_set_keeps_the_other_defaults() -> None:
    cfg = parse_config({"check": {"max_verify_age": "3d"}}, "vk.toml")
    assert cfg.check == CheckConfig(timedelta(hours=26), timedelta(days=3), None)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"max_age": "26"},
            "vk.toml: check.max_age: '26' is not a duration such as",
        ),
        (
            {"max_verify_age": 8},
            "vk.toml: check.max_verify_age: must be a duration such as",
        ),
        ({"max_drill_age": "0d"}, "vk.toml: check.max_drill_age: '0d' must be longer than zero"),
        ({"max_ages": "26h"}, "vk.toml: check.max_ages: unknown key (did you mean 'max_age'?)"),
    ],
)
def test_errors_name_the_file_and_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"check": table}, "vk.toml")
    assert str(e.value).startswith(message)


def test_check_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"^vk.toml: check: must be a table, got a string$"):
        parse_config({"check": "26h"}, "vk.toml")


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["max_age", "max_verify_age", "max_drill_age", "x"]),
        st.one_of(st.text(max_size=8), st.integers(), st.floats(), st.booleans(), st.none()),
        max_size=3,
    )
)
def test_garbage_is_a_config_error_never_a_traceback(table: dict[str, Any]) -> None:
    try:
        cfg = parse_config({"check": table}, "fuzz.toml")
    except ConfigError as e:
        assert str(e).startswith("fuzz.toml: check")
    else:
        assert cfg.check.max_age > timedelta(0)
