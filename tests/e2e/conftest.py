"""Fixtures for end-to-end tests against the lab (tests/lab).

    lab          session: a `tests.lab.api.Lab` for the running lab; brings the lab up
                 when it is not (a cold first run builds the base images: ~2-3 min).
                 Without Docker (or root to start it) the e2e tests SKIP with the
                 reason, except in CI (CI=true), where a missing or broken lab FAILS.
    fresh_lab    function: the same Lab, with the fresh host recreated empty first.

Every test collected under tests/e2e is marked `e2e` (select with `-m e2e`, skip
with `-m "not e2e"`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab.api import Lab, get_lab, lab_unavailable
from tests.lab.sh import LabError
from tests.realparts import require

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def lab() -> Lab:
    reason = lab_unavailable()
    if reason is None:
        try:
            return get_lab()
        except LabError as e:
            reason = f"the lab could not be brought up: {e}"
    require(f"e2e needs the lab and there is none on this machine: {reason}")


@pytest.fixture
def fresh_lab(lab: Lab) -> Lab:
    lab.reset_fresh()
    return lab
