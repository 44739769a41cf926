"""Unit tests for retention planning: the keep_* rules as restic and borg define them,
partial and incomplete snapshots, references between snapshots, Object Lock, and
hypothesis properties.

Expected sets are worked out by hand in comments (calendar facts: 2026-10-31 is a
Saturday in ISO week 2026-W44; 2026 has 53 ISO weeks, and 2027-01-01 is in 2026-W53),
never by re-running the algorithm.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vkbackup.config.model import RetentionConfig
from vkbackup.retention import (
    REASON_EMPTY_POLICY,
    REASON_INCOMPLETE,
    REASON_NEWEST_COMPLETE,
    REASON_NOT_SELECTED,
    REASON_PARTIAL_NEWER,
    REASON_PARTIAL_OLDER,
    SnapshotInfo,
    Status,
    plan_prune,
)

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def snap(
    sid: str,
    when: datetime,
    status: Status = "complete",
    own: set[str] | None = None,
    refs: set[str] | None = None,
) -> SnapshotInfo:
    return SnapshotInfo(
        id=sid,
        time=when,
        status=status,
        object_keys=frozenset(own or ()),
        referenced_keys=frozenset(refs or ()),
    )


def october_nightly() -> list[SnapshotInfo]:
    """One snapshot a night, 2026-10-01 .. 2026-10-31 at 02:00 UTC, id "10-DD"."""
    return [snap(f"10-{d:02d}", datetime(2026, 10, d, 2, 0, tzinfo=UTC)) for d in range(1, 32)]


def days(*dd: int) -> set[str]:
    return {f"10-{d:02d}" for d in dd}


# --- the month of nightly snapshots -------------------------------------------------


def test_month_of_nightlies_keeps_exactly_the_policy() -> None:
    policy = RetentionConfig(keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=6)
    plan = plan_prune(october_nightly(), policy, NOW)
    # last 3:    31, 30, 29
    # daily 7:   31, 30, 29, 28, 27, 26, 25
    # weekly 4:  W44 (Mon 26 .. Sat 31) -> 31; W43 (19..25) -> 25; W42 (12..18) -> 18;
    #            W41 (5..11) -> 11
    # monthly 6: 2026-10 -> 31; only one month exists, so the oldest (01) is kept too
    expected = days(31, 30, 29, 28, 27, 26, 25, 18, 11, 1)
    assert plan.kept_ids == expected
    assert plan.dropped_ids == {s.id for s in october_nightly()} - expected
    assert plan.decision("10-31").reasons == (
        REASON_NEWEST_COMPLETE,
        "last #1",
        "daily 2026-10-31",
        "weekly 2026-W44",
        "monthly 2026-10",
    )
    assert plan.decision("10-29").reasons == ("last #3", "daily 2026-10-29")
    assert plan.decision("10-25").reasons == ("daily 2026-10-25", "weekly 2026-W43")
    assert plan.decision("10-18").reasons == ("weekly 2026-W42",)
    assert plan.decision("10-11").reasons == ("weekly 2026-W41",)
    assert plan.decision("10-01").reasons == (
        "monthly 2026-10 (oldest complete: keep_monthly=6 not yet filled)",
    )
    assert plan.decision("10-24").reasons == (REASON_NOT_SELECTED,)
    assert not plan.policy_empty
    # decisions come newest first
    assert [d.snapshot.id for d in plan.decisions][:3] == ["10-31", "10-30", "10-29"]


def test_input_order_does_not_matter() -> None:
    policy = RetentionConfig(keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=6)
    shuffled = october_nightly()
    random.Random(7).shuffle(shuffled)
    assert plan_prune(shuffled, policy, NOW) == plan_prune(october_nightly(), policy, NOW)


# --- each rule alone ----------------------------------------------------------------


def test_keep_last_alone() -> None:
    plan = plan_prune(october_nightly(), RetentionConfig(keep_last=3), NOW)
    assert plan.kept_ids == days(31, 30, 29)


def test_keep_last_more_than_exist_keeps_all() -> None:
    three = october_nightly()[:3]
    plan = plan_prune(three, RetentionConfig(keep_last=5), NOW)
    assert plan.kept_ids == days(1, 2, 3)


def test_keep_daily_alone() -> None:
    plan = plan_prune(october_nightly(), RetentionConfig(keep_daily=7), NOW)
    assert plan.kept_ids == days(31, 30, 29, 28, 27, 26, 25)


def test_keep_weekly_alone() -> None:
    plan = plan_prune(october_nightly(), RetentionConfig(keep_weekly=4), NOW)
    assert plan.kept_ids == days(31, 25, 18, 11)


def test_keep_weekly_more_weeks_than_exist_keeps_oldest() -> None:
    # weeks: W44 -> 31, W43 -> 25, W42 -> 18, W41 -> 11, W40 (Mon 28 Sep .. 4 Oct) -> 04;
    # 5 of 6 filled, so the oldest (01) as well
    plan = plan_prune(october_nightly(), RetentionConfig(keep_weekly=6), NOW)
    assert plan.kept_ids == days(31, 25, 18, 11, 4, 1)
    assert plan.decision("10-04").reasons == ("weekly 2026-W40",)
    assert "oldest" in plan.decision("10-01").reasons[0]


def test_keep_monthly_alone() -> None:
    plan = plan_prune(october_nightly(), RetentionConfig(keep_monthly=6), NOW)
    assert plan.kept_ids == days(31, 1)


def test_keep_monthly_over_three_months() -> None:
    nightly = [
        snap(f"{d:%m-%d}", datetime(d.year, d.month, d.day, 2, tzinfo=UTC))
        for d in (datetime(2026, 8, 1) + timedelta(days=i) for i in range(92))
    ]
    assert nightly[-1].id == "10-31"
    plan = plan_prune(nightly, RetentionConfig(keep_monthly=2), NOW)
    assert plan.kept_ids == {"10-31", "09-30"}
    plan = plan_prune(nightly, RetentionConfig(keep_monthly=3), NOW)
    assert plan.kept_ids == {"10-31", "09-30", "08-31"}
    plan = plan_prune(nightly, RetentionConfig(keep_monthly=6), NOW)
    assert plan.kept_ids == {"10-31", "09-30", "08-31", "08-01"}


def test_keep_yearly_alone() -> None:
    # the 1st of every month, 2024-01 .. 2026-10
    monthly = [
        snap(f"{y}-{m:02d}", datetime(y, m, 1, 2, tzinfo=UTC))
        for y in (2024, 2025, 2026)
        for m in range(1, 13)
        if (y, m) <= (2026, 10)
    ]
    plan = plan_prune(monthly, RetentionConfig(keep_yearly=2), NOW)
    assert plan.kept_ids == {"2026-10", "2025-12"}
    assert plan.decision("2025-12").reasons == ("yearly 2025",)
    plan = plan_prune(monthly, RetentionConfig(keep_yearly=5), NOW)
    assert plan.kept_ids == {"2026-10", "2025-12", "2024-12", "2024-01"}


def test_keep_hourly_alone() -> None:
    # two snapshots an hour, at :15 and :45, from 00:15 to 05:45 on 2026-10-31
    snaps = [
        snap(f"{h:02d}:{m}", datetime(2026, 10, 31, h, m, tzinfo=UTC))
        for h in range(6)
        for m in (15, 45)
    ]
    plan = plan_prune(snaps, RetentionConfig(keep_hourly=3), NOW)
    assert plan.kept_ids == {"05:45", "04:45", "03:45"}
    assert plan.decision("04:45").reasons == ("hourly 2026-10-31 04:00Z",)


def test_several_snapshots_a_day_only_newest_of_the_day_counts_for_daily() -> None:
    snaps = [
        snap(f"{d:02d}T{h:02d}", datetime(2026, 10, d, h, tzinfo=UTC))
        for d in range(25, 32)
        for h in (2, 8, 14, 20)
    ]
    plan = plan_prune(snaps, RetentionConfig(keep_daily=3), NOW)
    assert plan.kept_ids == {"31T20", "30T20", "29T20"}
    plan = plan_prune(snaps, RetentionConfig(keep_last=2, keep_daily=3), NOW)
    assert plan.kept_ids == {"31T20", "31T14", "30T20", "29T20"}


def test_days_without_snapshots_do_not_count() -> None:
    snaps = [snap(f"10-{d:02d}", datetime(2026, 10, d, 2, tzinfo=UTC)) for d in (1, 5, 9, 20)]
    plan = plan_prune(snaps, RetentionConfig(keep_daily=3), NOW)
    assert plan.kept_ids == days(20, 9, 5)


def test_weekly_uses_iso_weeks_across_the_new_year() -> None:
    # 2026-12-28 (Mon), 2026-12-31 (Thu) and 2027-01-01 (Fri) are all in 2026-W53;
    # 2027-01-04 (Mon) starts 2027-W01
    snaps = [
        snap("12-28", datetime(2026, 12, 28, 2, tzinfo=UTC)),
        snap("12-31", datetime(2026, 12, 31, 2, tzinfo=UTC)),
        snap("01-01", datetime(2027, 1, 1, 2, tzinfo=UTC)),
        snap("01-04", datetime(2027, 1, 4, 2, tzinfo=UTC)),
    ]
    now = datetime(2027, 1, 5, tzinfo=UTC)
    plan = plan_prune(snaps, RetentionConfig(keep_weekly=2), now)
    assert plan.kept_ids == {"01-04", "01-01"}
    assert plan.decision("01-01").reasons == ("weekly 2026-W53",)
    assert plan.decision("01-04").reasons == (REASON_NEWEST_COMPLETE, "weekly 2027-W01")


def test_periods_are_utc_calendar_periods() -> None:
    est = timezone(timedelta(hours=-5))
    snaps = [
        # 2026-10-31 23:30 at UTC-5 is 2026-11-01 04:30 UTC: November, not October
        snap("late", datetime(2026, 10, 31, 23, 30, tzinfo=est)),
        snap("oct", datetime(2026, 10, 31, 20, 0, tzinfo=UTC)),
        snap("sep", datetime(2026, 9, 30, 20, 0, tzinfo=UTC)),
    ]
    plan = plan_prune(snaps, RetentionConfig(keep_monthly=2), NOW)
    assert plan.kept_ids == {"late", "oct"}
    assert plan.decision("late").reasons[-1] == "monthly 2026-11"


def test_rules_count_independently_like_restic() -> None:
    # keep_daily=2 keeps 31 and 30; keep_weekly=1 keeps W44's newest, 31, again rather
    # than looking for an extra one (borg would take 29, restic does not)
    plan = plan_prune(october_nightly(), RetentionConfig(keep_daily=2, keep_weekly=1), NOW)
    assert plan.kept_ids == days(31, 30)


# --- empty policy, newest complete, partial and incomplete ----------------------------


def test_empty_policy_keeps_everything() -> None:
    snaps = [
        *october_nightly(),
        snap("partial-old", datetime(2026, 10, 15, 3, tzinfo=UTC), "partial", {"p"}),
        snap("broken", datetime(2026, 10, 20, 3, tzinfo=UTC), "incomplete", {"b"}),
    ]
    plan = plan_prune(snaps, RetentionConfig(), NOW)
    assert plan.policy_empty
    assert plan.kept_ids == {s.id for s in snaps}
    assert plan.dropped == ()
    assert plan.deletable_keys == ()
    assert {d.reasons for d in plan.decisions} == {(REASON_EMPTY_POLICY,)}


def test_no_snapshots() -> None:
    plan = plan_prune([], RetentionConfig(keep_last=1), NOW)
    assert plan.decisions == ()
    assert plan.deletable_keys == ()


def test_incomplete_snapshots_are_never_counted_and_dropped() -> None:
    snaps = [
        snap("c1", datetime(2026, 10, 29, 2, tzinfo=UTC), own={"c1"}),
        snap("c2", datetime(2026, 10, 30, 2, tzinfo=UTC), own={"c2"}),
        # newer than every complete one, but without a manifest: garbage
        snap("i1", datetime(2026, 10, 31, 2, tzinfo=UTC), "incomplete", {"i1/a", "i1/b"}),
        snap("i0", datetime(2026, 10, 28, 2, tzinfo=UTC), "incomplete", {"i0/a"}),
    ]
    plan = plan_prune(snaps, RetentionConfig(keep_last=1), NOW)
    # keep_last=1 counts complete snapshots only: c2, not i1
    assert plan.kept_ids == {"c2"}
    assert plan.decision("i1").reasons == (REASON_INCOMPLETE,)
    assert plan.decision("i0").reasons == (REASON_INCOMPLETE,)
    assert plan.deletable_keys == ("c1", "i0/a", "i1/a", "i1/b")


def test_incomplete_within_grace_is_kept() -> None:
    snaps = [
        snap("c", datetime(2026, 10, 31, 2, tzinfo=UTC), own={"c"}),
        snap("running", NOW - timedelta(minutes=20), "incomplete", {"r"}),
        snap("stale", NOW - timedelta(hours=3), "incomplete", {"s"}),
    ]
    plan = plan_prune(snaps, RetentionConfig(keep_last=1), NOW, incomplete_grace=timedelta(hours=1))
    assert plan.kept_ids == {"c", "running"}
    assert "grace" in plan.decision("running").reasons[0]
    assert plan.deletable_keys == ("s",)


def test_partial_snapshots_newer_than_newest_complete_are_kept() -> None:
    snaps = [
        snap("p-old", datetime(2026, 10, 28, 2, tzinfo=UTC), "partial", {"po"}),
        snap("c", datetime(2026, 10, 29, 2, tzinfo=UTC), own={"c"}),
        snap("p1", datetime(2026, 10, 30, 2, tzinfo=UTC), "partial", {"p1"}),
        snap("p2", datetime(2026, 10, 31, 2, tzinfo=UTC), "partial", {"p2"}),
    ]
    plan = plan_prune(snaps, RetentionConfig(keep_last=1), NOW)
    # keep_last counts complete ones only: c; the partials after it are kept as well
    assert plan.kept_ids == {"c", "p1", "p2"}
    assert plan.decision("p2").reasons == (REASON_PARTIAL_NEWER,)
    assert plan.decision("c").reasons == (REASON_NEWEST_COMPLETE, "last #1")
    assert plan.decision("p-old").reasons == (REASON_PARTIAL_OLDER,)
    assert plan.deletable_keys == ("po",)


def test_only_partial_snapshots_are_all_kept() -> None:
    snaps = [snap(f"p{d}", datetime(2026, 10, d, 2, tzinfo=UTC), "partial") for d in (1, 2, 3)]
    plan = plan_prune(snaps, RetentionConfig(keep_last=1), NOW)
    assert plan.kept_ids == {"p1", "p2", "p3"}


def test_newest_complete_is_kept_even_when_many_partials_follow() -> None:
    snaps = [snap("c", datetime(2026, 10, 1, 2, tzinfo=UTC))] + [
        snap(f"p{d}", datetime(2026, 10, d, 2, tzinfo=UTC), "partial") for d in range(2, 10)
    ]
    plan = plan_prune(snaps, RetentionConfig(keep_daily=1), NOW)
    assert "c" in plan.kept_ids
    assert REASON_NEWEST_COMPLETE in plan.decision("c").reasons


# --- references between snapshots ----------------------------------------------------


def test_dropping_the_start_of_a_chain_keeps_referenced_objects() -> None:
    # 10-01 is a full: a volume tar, an image and a dump. 10-02..10-07 are incrementals
    # that reference the full's volume tar and image, and the previous incrementals.
    snaps = [
        snap(
            "10-01",
            datetime(2026, 10, 1, 2, tzinfo=UTC),
            own={"m/01", "full/vol.tar", "full/image.tar", "01/dump"},
        )
    ]
    for d in range(2, 8):
        snaps.append(
            snap(
                f"10-{d:02d}",
                datetime(2026, 10, d, 2, tzinfo=UTC),
                own={f"m/{d:02d}", f"{d:02d}/dump", f"{d:02d}/vol.incr"},
                refs={"full/vol.tar", "full/image.tar"}
                | {f"{e:02d}/vol.incr" for e in range(2, d)},
            )
        )
    plan = plan_prune(snaps, RetentionConfig(keep_last=1), NOW)
    assert plan.kept_ids == days(7)
    # the kept 10-07 still has its full and every incremental; the dumps and
    # manifests of the dropped ones go
    assert plan.deletable_keys == tuple(
        sorted(
            {"m/01", "01/dump"}
            | {f"m/{d:02d}" for d in range(2, 7)}
            | {f"{d:02d}/dump" for d in range(2, 7)}
        )
    )
    kept_needs = snaps[-1].keys
    assert not kept_needs & set(plan.deletable_keys)


def test_reused_object_whose_owner_was_pruned_earlier_is_deleted_with_its_last_user() -> None:
    # the owner of "old/image.tar" is gone already (an earlier prune kept the object
    # because "b" referenced it); once "b" is dropped, nothing uses it any more
    snaps = [
        snap("b", datetime(2026, 10, 30, 2, tzinfo=UTC), own={"m/b"}, refs={"old/image.tar"}),
        snap("c", datetime(2026, 10, 31, 2, tzinfo=UTC), own={"m/c", "c/image.tar"}),
    ]
    plan = plan_prune(snaps, RetentionConfig(keep_last=1), NOW)
    assert plan.deletable_keys == ("m/b", "old/image.tar")


def test_object_referenced_by_a_kept_partial_snapshot_is_not_deleted() -> None:
    snaps = [
        snap("old", datetime(2026, 10, 1, 2, tzinfo=UTC), own={"m/old", "img"}),
        snap("c", datetime(2026, 10, 2, 2, tzinfo=UTC), own={"m/c"}),
        snap("p", datetime(2026, 10, 3, 2, tzinfo=UTC), "partial", {"m/p"}, {"img"}),
    ]
    plan = plan_prune(snaps, RetentionConfig(keep_last=1), NOW)
    assert plan.kept_ids == {"c", "p"}
    assert plan.deletable_keys == ("m/old",)


# --- Object Lock -----------------------------------------------------------------------


class LockTable:
    """A retention_until stand-in that records which keys it was asked about."""

    def __init__(self, locks: dict[str, datetime]) -> None:
        self.locks = locks
        self.asked: list[str] = []

    def __call__(self, key: str) -> datetime | None:
        self.asked.append(key)
        return self.locks.get(key)


def test_snapshot_with_locked_objects_is_kept_with_the_lock_date() -> None:
    until = datetime(2026, 11, 20, tzinfo=UTC)
    snaps = [
        snap("a", datetime(2026, 10, 20, 2, tzinfo=UTC), own={"m/a", "a/dump"}),
        snap("b", datetime(2026, 10, 25, 2, tzinfo=UTC), own={"m/b", "b/dump"}),
        snap("c", datetime(2026, 10, 31, 2, tzinfo=UTC), own={"m/c", "c/dump"}),
    ]
    locks = LockTable(
        {
            "b/dump": until,
            "m/b": until - timedelta(days=1),
            "a/dump": NOW - timedelta(seconds=1),  # expired: no obstacle
        }
    )
    plan = plan_prune(snaps, RetentionConfig(keep_last=1), NOW, retention_until=locks)
    assert plan.kept_ids == {"b", "c"}
    b = plan.decision("b")
    assert b.locked_until == until
    assert b.reasons == (
        "under Object Lock until 2026-11-20T00:00:00Z",
        f"otherwise dropped: {REASON_NOT_SELECTED}",
    )
    assert plan.deletable_keys == ("a/dump", "m/a")
    # only keys that would be deleted are looked up, each once
    assert sorted(locks.asked) == ["a/dump", "b/dump", "m/a", "m/b"]


def test_lock_on_an_object_a_kept_snapshot_uses_keeps_nothing_else() -> None:
    far = datetime(2027, 1, 1, tzinfo=UTC)
    snaps = [
        snap("old", datetime(2026, 10, 1, 2, tzinfo=UTC), own={"m/old", "img"}),
        snap("new", datetime(2026, 10, 31, 2, tzinfo=UTC), own={"m/new"}, refs={"img"}),
    ]
    locks = LockTable({"img": far})
    plan = plan_prune(snaps, RetentionConfig(keep_last=1), NOW, retention_until=locks)
    # "img" stays because "new" uses it; "old" itself can go
    assert plan.kept_ids == {"new"}
    assert plan.deletable_keys == ("m/old",)
    assert "img" not in locks.asked


def test_locked_incomplete_snapshot_is_kept_until_the_lock_expires() -> None:
    until = datetime(2026, 12, 1, tzinfo=UTC)
    snaps = [
        snap("c", datetime(2026, 10, 31, 2, tzinfo=UTC), own={"m/c"}),
        snap("i", datetime(2026, 10, 30, 2, tzinfo=UTC), "incomplete", {"i/x", "i/y"}),
    ]
    plan = plan_prune(snaps, RetentionConfig(keep_last=1), NOW, retention_until={"i/x": until}.get)
    assert plan.kept_ids == {"c", "i"}
    assert plan.decision("i").reasons[1] == f"otherwise dropped: {REASON_INCOMPLETE}"
    assert plan.deletable_keys == ()
    later = until + timedelta(seconds=1)
    plan = plan_prune(
        snaps, RetentionConfig(keep_last=1), later, retention_until={"i/x": until}.get
    )
    assert plan.kept_ids == {"c"}
    assert plan.deletable_keys == ("i/x", "i/y")


# --- contract violations ---------------------------------------------------------------


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        snap("x", datetime(2026, 10, 1))
    with pytest.raises(ValueError, match="now"):
        plan_prune([], RetentionConfig(keep_last=1), datetime(2026, 10, 1))
    s = snap("x", datetime(2026, 10, 1, tzinfo=UTC), own={"k"})
    with pytest.raises(ValueError, match="retain-until of k"):
        plan_prune(
            [s, snap("y", datetime(2026, 10, 2, tzinfo=UTC))],
            RetentionConfig(keep_last=1),
            NOW,
            retention_until=lambda _k: datetime(2027, 1, 1),
        )


def test_duplicate_ids_unknown_status_and_negative_counts_are_refused() -> None:
    s = snap("x", datetime(2026, 10, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="twice"):
        plan_prune([s, replace(s, time=s.time + timedelta(hours=1))], RetentionConfig(), NOW)
    with pytest.raises(ValueError, match="status"):
        SnapshotInfo("x", s.time, "done")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep_daily"):
        plan_prune([s], RetentionConfig(keep_daily=-1), NOW)


# --- properties --------------------------------------------------------------------------

KEYS = [f"k{i}" for i in range(12)]
START = datetime(2024, 1, 1, tzinfo=UTC)


@st.composite
def snapshot_lists(draw: st.DrawFn) -> list[SnapshotInfo]:
    n = draw(st.integers(0, 25))
    # minutes over ~3 years, so every rule sees several periods and some collisions
    offsets = draw(st.lists(st.integers(0, 3 * 366 * 24 * 60), min_size=n, max_size=n))
    out = []
    for i, off in enumerate(offsets):
        statuses: list[Status] = ["complete", "complete", "complete", "partial", "incomplete"]
        status = draw(st.sampled_from(statuses))
        own = draw(st.frozensets(st.sampled_from(KEYS), max_size=3))
        refs = draw(st.frozensets(st.sampled_from(KEYS), max_size=3))
        out.append(
            SnapshotInfo(
                id=f"s{i:02d}",
                time=START + timedelta(minutes=off),
                status=status,
                object_keys=own,
                referenced_keys=refs,
            )
        )
    return out


counts = st.integers(0, 6)
policies = st.builds(
    RetentionConfig,
    keep_last=counts,
    keep_hourly=counts,
    keep_daily=counts,
    keep_weekly=counts,
    keep_monthly=counts,
    keep_yearly=counts,
)
lock_tables = st.dictionaries(
    st.sampled_from(KEYS),
    st.integers(-30, 30).map(lambda d: NOW + timedelta(days=d)),
)
FIELDS = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"]


@settings(max_examples=300, deadline=None)
@given(snapshot_lists(), policies, lock_tables)
def test_property_plan_invariants(
    snaps: list[SnapshotInfo], policy: RetentionConfig, locks: dict[str, datetime]
) -> None:
    plan = plan_prune(snaps, policy, NOW, retention_until=locks.get)
    ids = {s.id for s in snaps}
    # every snapshot decided once: kept and dropped partition the input
    assert sorted(d.snapshot.id for d in plan.decisions) == sorted(ids)
    assert plan.kept_ids | plan.dropped_ids == ids
    assert not plan.kept_ids & plan.dropped_ids
    # every kept snapshot says why
    assert all(d.reasons for d in plan.decisions)
    # the newest complete snapshot is always kept
    complete = [s for s in snaps if s.status == "complete"]
    if complete:
        newest = max(complete, key=lambda s: (s.time, s.id))
        assert newest.id in plan.kept_ids
    # a deletable key is used by no kept snapshot, was used by a dropped one, is not locked
    deletable = set(plan.deletable_keys)
    for s in plan.kept:
        assert not s.keys & deletable
    assert deletable <= set().union(*(s.keys for s in plan.dropped))
    for key in deletable:
        assert key not in locks or locks[key] <= NOW
    # incomplete snapshots are never kept by a rule
    for d in plan.decisions:
        if d.snapshot.status == "incomplete" and d.keep:
            assert d.locked_until is not None or plan.policy_empty


@settings(max_examples=300, deadline=None)
@given(snapshot_lists(), policies, st.sampled_from(FIELDS), st.integers(1, 3))
def test_property_increasing_a_keep_count_never_drops_more(
    snaps: list[SnapshotInfo], policy: RetentionConfig, field_name: str, extra: int
) -> None:
    # from a non-empty policy (an empty one keeps everything)
    if policy.is_empty():
        policy = replace(policy, keep_last=1)
    bigger = replace(policy, **{field_name: getattr(policy, field_name) + extra})
    small_plan = plan_prune(snaps, policy, NOW)
    big_plan = plan_prune(snaps, bigger, NOW)
    assert small_plan.kept_ids <= big_plan.kept_ids
    assert set(big_plan.deletable_keys) <= set(small_plan.deletable_keys)


@settings(max_examples=100, deadline=None)
@given(snapshot_lists(), policies, st.randoms(use_true_random=False))
def test_property_order_of_input_does_not_matter(
    snaps: list[SnapshotInfo], policy: RetentionConfig, rnd: random.Random
) -> None:
    shuffled = list(snaps)
    rnd.shuffle(shuffled)
    assert plan_prune(shuffled, policy, NOW) == plan_prune(snaps, policy, NOW)
