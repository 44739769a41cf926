"""Durations as people write them in a config file or on a command line: "26h",
"8d", "90m", "1d12h", "3d 4h", "2w" (units s, m, h, d, w; no unit is an error, so "26"
can never silently mean seconds). `parse_duration` is the one parser: the
config's [check] table and `vkbackup check`'s options both use it, and its
errors name the key or option that was wrong. `format_duration` writes an age
or a limit back the short way ("26h", "8d", "3d 4h", "13m 5s").
"""

from __future__ import annotations

import re
from datetime import timedelta

from vkbackup.errors import UsageError, VkError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: the longest duration accepted: far beyond any sensible limit, well inside timedelta
MAX_DURATION = timedelta(days=36500)
_TERM = re.compile(r"([0-9]{1,9})([smhdw])")
_WHOLE = re.compile(r"(?:[0-9]{1,9}[smhdw])+")


def parse_duration(text: object, name: str, error: type[VkError] = UsageError) -> timedelta:
    """Given a duration text ("26h", "8d", "1d12h") and the name of the option or
    key it came from ("--max-age", "vkbackup.toml: check.max_age"), return it as
    a timedelta. Raise *error* (UsageError by default, exit 2) naming *name* if it
    is not a string, has no unit, an unknown unit, is zero, or is longer than
    MAX_DURATION."""
    example = 'a duration such as "26h", "8d", "90m" or "1d12h" (units s, m, h, d, w)'
    if not isinstance(text, str):
        raise error(f"{name}: must be {example}, got {type(text).__name__} {text!r}")
    raw = re.sub(r"\s+", "", text).lower()  # "3d 4h", as format_duration writes it
    if not _WHOLE.fullmatch(raw):
        hint = ' (no unit: say "26h" or "26s")' if raw.isdigit() else ""
        raise error(f"{name}: {text!r} is not {example}{hint}")
    seconds = sum(int(n) * UNITS[u] for n, u in _TERM.findall(raw))
    if seconds <= 0:
        raise error(f"{name}: {text!r} must be longer than zero")
    if seconds > MAX_DURATION.total_seconds():
        raise error(f"{name}: {text!r} is longer than {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)


def format_duration(d: timedelta) -> str:
    """Given a duration (negative counts as zero), return it the short way, to the
    second: "42s", "13m 5s", "26h", "47h 59m", "3d 4h", "100d"."""
    s = max(0, int(d.total_seconds()))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m}m {r}s" if r else f"{m}m"
    if s < 48 * 3600:
        h, r = divmod(s, 3600)
        m = r // 60
        return f"{h}h {m}m" if m else f"{h}h"
    days, r = divmod(s, 86400)
    h = r // 3600
    return f"{days}d {h}h" if h else f"{days}d"
