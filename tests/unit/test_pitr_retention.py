"""Which streamed WAL prune deletes (`vkbackup.pitr.retention`), pure: the horizon
from the kept base backups' snapshot times, exactly the full and partial records
stored before it (never a history file, nothing without a horizon), and the
gaps in what stays, per timeline, named by segment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from vkbackup.pitr import wal
from vkbackup.pitr.retention import find_gaps, horizon, plan_wal_prune
from vkbackup.pitr.wal import DEFAULT_SEGMENT_SIZE, WalRecord

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
HOST = "prod"
SYSID = "7441234567890123456"
SHA = "cd" * 32
SEG = DEFAULT_SEGMENT_SIZE
SKEW = timedelta(minutes=5)


def minutes(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def record(
    segno: int,
    at: float,
    *,
    kind: str = "full",
    tli: int = 1,
    seg: int = SEG,
) -> WalRecord:
    """A record of segment *segno* (or timeline *tli*'s history file) stored *at*
    minutes after T0."""
    n = wal.history_name(tli) if kind == "history" else wal.segment_name(tli, segno, seg)
    version = "0123456789abcdef" if kind == "partial" else ""
    plain = seg if kind == "full" else 1000
    return WalRecord(
        host=HOST,
        timeline=tli,
        name=n,
        kind=kind,
        key=wal.object_key(HOST, tli, n, kind, version),
        sha256=SHA,
        size=plain + 200,
        plain_size=plain,
        segment_size=seg,
        system_identifier=SYSID,
        time=minutes(at),
    )


def seg_name(segno: int, tli: int = 1, seg: int = SEG) -> str:
    return wal.segment_name(tli, segno, seg)


# -- horizon -----------------------------------------------------------------------------


def test_horizon_is_the_oldest_time_less_the_skew() -> None:
    times = [minutes(60), minutes(10), minutes(30)]
    assert horizon(times, SKEW) == minutes(5)
    assert horizon(iter(times), timedelta(0)) == minutes(10)  # any iterable, read once
    assert horizon([minutes(0)], timedelta(hours=1)) == minutes(-60)


def test_horizon_without_a_kept_base_backup_is_none() -> None:
    assert horizon([], SKEW) is None
    assert horizon(iter(()), SKEW) is None


# -- plan_wal_prune ----------------------------------------------------------------------


def test_plan_deletes_exactly_full_and_partial_records_stored_before_the_horizon() -> None:
    old_full = record(3, 1)
    old_partial = record(4, 2, kind="partial")
    old_history = record(0, 0, kind="history", tli=2)
    at_horizon = record(4, 10)  # exactly at the horizon: not before it, kept
    later = record(5, 11)
    later_partial = record(6, 12, kind="partial")
    records = [later, old_history, old_full, at_horizon, old_partial, later_partial]
    plan = plan_wal_prune(records, minutes(10))
    assert plan.horizon == minutes(10)
    assert set(plan.delete) == {old_full, old_partial}
    assert len(plan.delete) == 2
    assert plan.kept == 4  # the history file, the one at the horizon and the later two
    assert plan.gaps == ()


def test_plan_never_deletes_a_history_file_however_old() -> None:
    records = [record(0, -10_000, kind="history", tli=t) for t in (2, 3)]
    plan = plan_wal_prune([*records, record(3, -10_000)], minutes(0))
    assert [r.kind for r in plan.delete] == ["full"]
    assert plan.kept == 2


def test_plan_without_a_horizon_deletes_nothing() -> None:
    records = [record(3, -1000), record(4, -900, kind="partial"), record(5, 0)]
    plan = plan_wal_prune(records, None)
    assert plan.horizon is None
    assert plan.delete == ()
    assert plan.kept == 3


def test_plan_of_no_records() -> None:
    plan = plan_wal_prune([], minutes(0))
    assert (plan.delete, plan.kept, plan.gaps) == ((), 0, ())


def test_plan_gaps_are_those_of_what_stays() -> None:
    # 1 and 3 (with gaps 2 and 4 around them) go; 5 and 6 stay: no gap left
    records = [record(1, 0), record(3, 0), record(5, 20), record(6, 20)]
    assert find_gaps(records) == [
        f"timeline 1: {seg_name(2)}",
        f"timeline 1: {seg_name(4)}",
    ]
    plan = plan_wal_prune(records, minutes(10))
    assert {r.segno for r in plan.delete} == {1, 3}
    assert plan.kept == 2
    assert plan.gaps == ()


def test_plan_names_the_gap_deleting_leaves_behind() -> None:
    # segment 4 was stored early (before the horizon), its neighbours later:
    # deleting it leaves a hole that stops any restore, and the plan says so
    records = [record(3, 20), record(4, 1), record(5, 20)]
    plan = plan_wal_prune(records, minutes(10))
    assert [r.segno for r in plan.delete] == [4]
    assert plan.gaps == (f"timeline 1: {seg_name(4)}",)


# -- find_gaps ---------------------------------------------------------------------------


def test_no_gap_in_a_continuous_run() -> None:
    assert find_gaps([record(n, n) for n in (7, 3, 5, 4, 6)]) == []
    assert find_gaps([record(3, 0)]) == []
    assert find_gaps([]) == []


def test_one_missing_segment_is_named_alone() -> None:
    assert find_gaps([record(3, 0), record(5, 0)]) == [
        "timeline 1: 000000010000000000000004",
    ]


def test_a_run_of_missing_segments_is_named_first_to_last() -> None:
    assert find_gaps([record(3, 0), record(7, 0), record(8, 0), record(10, 0)]) == [
        "timeline 1: 000000010000000000000004 .. 000000010000000000000006",
        "timeline 1: 000000010000000000000009",
    ]


def test_gaps_are_per_timeline() -> None:
    records = [
        record(3, 0, tli=1),
        record(5, 0, tli=1),
        # timeline 2 continues from 5 on: 3 and 4 are timeline 1's business
        record(5, 0, tli=2),
        record(6, 0, tli=2),
        record(9, 0, tli=2),
        record(0, 0, kind="history", tli=2),
    ]
    assert find_gaps(records) == [
        f"timeline 1: {seg_name(4)}",
        f"timeline 2: {seg_name(7, 2)} .. {seg_name(8, 2)}",
    ]
    # timeline 1 alone has no gap with segment 4: timeline 2's 4 would not fill it
    assert find_gaps([record(3, 0), record(4, 0, tli=2), record(5, 0)]) == [
        f"timeline 1: {seg_name(4)}",
    ]


def test_partials_are_ignored() -> None:
    # a partial between two whole segments does not fill the hole
    assert find_gaps([record(3, 0), record(4, 0, kind="partial"), record(5, 0)]) == [
        f"timeline 1: {seg_name(4)}",
    ]
    # a partial after the last whole segment is the one being received: no gap
    assert find_gaps([record(3, 0), record(4, 0, kind="partial")]) == []
    # partials alone (and history files) make no run at all
    assert find_gaps([record(3, 0, kind="partial"), record(9, 0, kind="partial")]) == []
    assert find_gaps([record(0, 0, kind="history", tli=2)]) == []


def test_a_duplicate_record_of_a_segment_is_no_gap() -> None:
    assert find_gaps([record(3, 0), record(3, 5), record(4, 0)]) == []


def test_gaps_of_64_mib_segments_cross_the_xlogid_boundary() -> None:
    seg = 64 * 1024 * 1024  # 64 segments per xlogid (4 GiB of LSN)
    records = [record(n, 0, seg=seg) for n in (62, 66)]
    assert find_gaps(records) == [
        "timeline 1: 00000001000000000000003F .. 000000010000000100000001",
    ]
    # with 16 MiB segments the same numbers are not across the boundary
    assert find_gaps([record(n, 0) for n in (62, 64)]) == [
        "timeline 1: 00000001000000000000003F",
    ]
    # one missing at the boundary itself: 000000010000000100000000
    assert find_gaps([record(n, 0, seg=seg) for n in (63, 65)]) == [
        "timeline 1: 000000010000000100000000",
    ]
