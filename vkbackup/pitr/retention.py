"""Which streamed WAL prune may delete. Pure: no effects.

A base backup restores to any moment from its end on, if the WAL from its
start is there. Snapshot retention already decides which base backups stay:
a kept snapshot references the base backup it took or reuses, and prune keeps
every object a kept snapshot uses. So the retention window (from the oldest
kept snapshot to now) is reachable from the oldest kept base backup, and WAL
is needed from that base backup's start on.

Prune runs with public keys only, so it cannot read a base backup's start
LSN (private part). It uses time instead: the segment holding a base
backup's start LSN was finished, hence stored, after the backup started,
which is after its snapshot started. So every WAL object stored before the
oldest kept base backup's snapshot started, less `pitr.skew` (the WAL stream
and the snapshot may run on machines whose clocks differ), is not needed by
any kept base backup: `plan_wal_prune` deletes exactly those, and keeps
timeline history files (a few bytes each; a later timeline's restore needs
them). With no kept base backup, nothing is deleted: WAL without a base
backup cannot be replayed, but deleting it would also lose what the next
base backup may need while its snapshot runs.

The gaps it reports are missing segments between the oldest and newest
whole segment kept on a timeline: a restore cannot replay across one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from vkbackup.pitr import wal


@dataclass(frozen=True)
class WalPrunePlan:
    horizon: datetime | None  # WAL stored before it is deleted; None: nothing is
    delete: tuple[wal.WalRecord, ...]
    kept: int  # WAL objects kept
    gaps: tuple[str, ...]  # "timeline 1: 000000010000000000000007 .. 000000010000000000000009"


def horizon(base_snapshot_times: Iterable[datetime], skew: timedelta) -> datetime | None:
    """Given when the snapshots that took the kept base backups started, return the
    time before which stored WAL is not needed (None: no kept base backup)."""
    times = list(base_snapshot_times)
    return min(times) - skew if times else None


def plan_wal_prune(records: Iterable[wal.WalRecord], until: datetime | None) -> WalPrunePlan:
    """Given every (signature-checked) WAL record of a host and the horizon, return
    what to delete and the gaps in what stays."""
    records = list(records)
    doomed = tuple(
        r for r in records if until is not None and r.kind != "history" and r.time < until
    )
    gone = {r.key for r in doomed}
    kept = [r for r in records if r.key not in gone]
    return WalPrunePlan(until, doomed, len(kept), tuple(find_gaps(kept)))


def find_gaps(records: Iterable[wal.WalRecord]) -> list[str]:
    """The runs of missing whole segments between the first and last whole segment
    of each timeline, as "timeline T: FIRST .. LAST". Partials are not counted:
    a partial stands for a segment still being received, after the last whole one
    (the chain from a base backup, `wal.chain_from`, says what replay reaches)."""
    by_tli: dict[int, dict[int, wal.WalRecord]] = {}
    for r in records:
        if r.kind == "full":
            by_tli.setdefault(r.timeline, {})[r.segno] = r
    out: list[str] = []
    for tli, segs in sorted(by_tli.items()):
        size = next(iter(segs.values())).segment_size
        have = sorted(segs)
        for a, b in itertools.pairwise(have):
            if b - a > 1:
                first = wal.segment_name(tli, a + 1, size)
                last = wal.segment_name(tli, b - 1, size)
                out.append(f"timeline {tli}: {first}" + (f" .. {last}" if b - a > 2 else ""))
    return out
