"""The one place that decides whether a missing real part skips or fails a test.

A test that needs something real from this machine (the lab, Docker Engine,
sshd, stock age, systemd-analyze, the right to mount a tmpfs, ...) calls
`require(reason)` when it is missing: in CI that is a failure, elsewhere a skip
with the reason. No test calls `pytest.skip`, `pytest.importorskip` or a `skipif`
marker directly; tests/conftest.py also fails a CI session in which any test was
skipped or xfailed anyway, and .ci/run checks the JUnit report for skips again.

The rule for "in CI", and the only spelling of it: the environment variable CI
is set to a non-empty value other than "0", "false" or "no" (compared after
stripping blanks, case-insensitive). So CI=true, CI=1, CI=yes, CI=TRUE and
CI=github are CI; unset, CI=, CI=0, CI=false, CI=False and CI=no are not.
.ci/run exports CI=true unless CI is already set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NoReturn

import pytest

_NOT_CI = frozenset({"", "0", "false", "no"})


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    """True when the CI variable says this run is CI (see the module docstring)."""
    env = os.environ if environ is None else environ
    return env.get("CI", "").strip().lower() not in _NOT_CI


def require(reason: str) -> NoReturn:
    """A real part this test needs is missing: fail in CI, skip with *reason* elsewhere."""
    if in_ci():
        pytest.fail(f"CI needs every real part and one is missing: {reason}", pytrace=False)
    pytest.skip(reason)
