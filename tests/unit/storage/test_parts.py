"""Part-size planning: never more than 10,000 parts, never below 5 MiB, R2-safe fixed size."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vkbackup.storage.parts import (
    DEFAULT_PART_SIZE,
    HINT_SAFETY,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIB,
    MIN_PART_SIZE,
    max_object_size,
    plan_part_size,
)


def test_no_hint_uses_default() -> None:
    assert plan_part_size(None) == DEFAULT_PART_SIZE == 8 * MIB
    assert max_object_size(DEFAULT_PART_SIZE) == 80_000 * MIB


def test_no_hint_uses_configured() -> None:
    assert plan_part_size(None, 8 * MIB) == 8 * MIB


def test_small_hint_keeps_default() -> None:
    assert plan_part_size(1000) == DEFAULT_PART_SIZE
    assert plan_part_size(0) == DEFAULT_PART_SIZE


def test_large_hint_grows_part_with_safety_margin() -> None:
    hint = 500 * 1024 * MIB  # 500 GiB
    part = plan_part_size(hint)
    assert part % MIB == 0
    assert part * MAX_PARTS >= hint * HINT_SAFETY
    assert (part - MIB) * MAX_PARTS < hint * HINT_SAFETY  # smallest such MiB multiple


def test_hint_grows_configured_part() -> None:
    assert plan_part_size(1024 * 1024 * MIB, 5 * MIB) > 5 * MIB


def test_configured_below_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="minimum"):
        plan_part_size(None, MIB)


def test_configured_above_maximum_is_refused() -> None:
    with pytest.raises(ValueError, match="maximum"):
        plan_part_size(None, MAX_PART_SIZE + MIB)


def test_hint_beyond_margin_but_within_limits_uses_max_part() -> None:
    hint = max_object_size(MAX_PART_SIZE) - 1
    assert plan_part_size(hint) == MAX_PART_SIZE


def test_hint_too_large_for_s3() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        plan_part_size(max_object_size(MAX_PART_SIZE) + 1)


@given(
    hint=st.one_of(st.none(), st.integers(min_value=-10, max_value=max_object_size(MAX_PART_SIZE))),
    configured=st.one_of(
        st.none(), st.integers(min_value=5, max_value=5120).map(lambda m: m * MIB)
    ),
)
def test_plan_invariants(hint: int | None, configured: int | None) -> None:
    part = plan_part_size(hint, configured)
    assert MIN_PART_SIZE <= part <= MAX_PART_SIZE
    assert part % MIB == 0
    if configured is not None:
        assert part >= configured
    if hint is not None and hint > 0:
        assert part * MAX_PARTS >= hint  # the hinted object always fits
