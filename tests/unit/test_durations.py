"""Durations as written in [check] and on `vkbackup check`'s command line: one
parser whose errors name the option or key."""

from __future__ import annotations

from datetime import timedelta

import pytest

from vkbackup.durations import format_duration, parse_duration
from vkbackup.errors import ConfigError, UsageError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("26h", timedelta(hours=26)),
        ("8d", timedelta(days=8)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(days=14)),
        ("1d12h", timedelta(hours=36)),
        ("3d 4h", timedelta(days=3, hours=4)),  # as format_duration writes it
        (" 100D ", timedelta(days=100)),
    ],
)
def test_parse_duration_accepts_units_and_combinations(text: str, expected: timedelta) -> None:
    assert parse_duration(text, "--max-age") == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("26", "'26' is not a duration"),
        ("", "'' is not a duration"),
        ("26 hours", "'26 hours' is not a duration"),
        ("-5h", "'-5h' is not a duration"),
        ("1.5h", "'1.5h' is not a duration"),
        ("0h", "'0h' must be longer than zero"),
        ("36501d", "'36501d' is longer than 36500 days"),
    ],
)
def test_parse_duration_errors_name_the_option(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_duration(text, "--max-verify-age")
    assert str(e.value).startswith(f"--max-verify-age: {problem}")


def test_a_bare_number_asks_for_a_unit_and_a_config_key_gets_a_config_error() -> None:
    with pytest.raises(UsageError, match=r'no unit: say "26h" or "26s"'):
        parse_duration("26", "--max-age")
    with pytest.raises(ConfigError) as e:
        parse_duration(26, "vk.toml: check.max_age", ConfigError)
    assert str(e.value) == (
        'vk.toml: check.max_age: must be a duration such as "26h", "8d", "90m" or "1d12h" '
        "(units s, m, h, d, w), got int 26"
    )
    assert e.value.exit_code == 2


@pytest.mark.parametrize(
    ("d", "text"),
    [
        (timedelta(seconds=-3), "0s"),
        (timedelta(seconds=42.9), "42s"),
        (timedelta(minutes=13), "13m"),
        (timedelta(minutes=13, seconds=5), "13m 5s"),
        (timedelta(hours=26), "26h"),
        (timedelta(hours=47, minutes=59, seconds=59), "47h 59m"),
        (timedelta(days=8), "8d"),
        (timedelta(days=3, hours=4, minutes=30), "3d 4h"),
    ],
)
def test_format_duration(d: timedelta, text: str) -> None:
    assert format_duration(d) == text


def test_format_then_parse_round_trips_whole_units() -> None:
    for d in (timedelta(hours=26), timedelta(days=100), timedelta(days=3, hours=4)):
        assert parse_duration(format_duration(d), "x") == d
