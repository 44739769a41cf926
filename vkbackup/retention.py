"""Retention planning: which snapshots a prune keeps, which it drops, and why. Pure.

Call `plan_prune` once per host: restic groups snapshots by host the same way, and an object
is only ever referenced by snapshots of its own host.

The keep_* rules, as ``restic forget --keep-*`` (0.16 and later) and ``borg prune``
(1.2 and later) define them:

- Periods are calendar periods in UTC (restic and borg use the local time zone of
  the machine that prunes; a backup tool run from cron on servers in several zones
  should not keep a different set depending on where prune runs). hourly: the hour,
  daily: the date, weekly: the ISO 8601 week (Monday to Sunday, "2026-W53" may hold
  2027-01-01), monthly: the month, yearly: the year.
- For each rule with N > 0, walk the complete snapshots newest first and keep the
  newest one of each distinct period, until N periods are kept. Periods without a
  snapshot do not count. keep_last N keeps the N newest.
- If a rule runs out of snapshots before it has kept N, it also keeps the oldest
  complete snapshot (restic PR #4366, borg 1.2 "[oldest]"), so the history a rule
  promises grows from the first snapshot on instead of being cut at the newest.
- Rules count independently, as in restic: a snapshot kept as a daily one also
  counts as the weekly one of its week. (borg does not count a snapshot that an
  earlier rule already kept, so borg may keep a few more with the same numbers.)
- A snapshot kept by any rule is kept, with every rule that chose it as a reason.
- Only complete snapshots are counted. A partial one (its manifest committed, some
  sources failed) is restorable for its good sources: it is kept while it is newer
  than the newest complete snapshot, and dropped once a complete one is newer, as
  borg does with checkpoint archives. An incomplete one (no manifest: a failed or
  interrupted run) is garbage and always dropped, unless it started within
  *incomplete_grace* of *now* (it may still be running).
- The newest complete snapshot is never dropped.
- An empty policy (every keep_* 0) keeps everything, with the reason "no retention
  policy configured" (borg refuses to prune without rules, restic keeps all).

References and Object Lock:

- ``object_keys`` are the objects a snapshot uploaded (its manifest included);
  ``referenced_keys`` are objects of earlier snapshots that it reuses. A key is
  deletable only when a dropped snapshot owns or references it and no kept
  snapshot owns or references it, so dropping the start of an incremental chain
  never breaks a kept snapshot.
- *retention_until* (e.g. ``storage.retention_until``) gives an object's Object Lock
  retain-until date, or None. It is asked only about keys that would be deleted.
  A snapshot that would be dropped but holds such a key locked past *now* is kept
  whole, with the reason "under Object Lock until ...", and none of its objects are
  deleted; a later prune drops it once the lock has expired. (A locked object that
  a kept snapshot uses is not deleted anyway, so it keeps no other snapshot.)

Contract violations (a naive datetime, a duplicate id, an unknown status, a
negative keep_* count) raise ValueError. Errors from *retention_until* propagate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from vkbackup.config.model import RetentionConfig

Status = Literal["complete", "partial", "incomplete"]
STATUSES: tuple[str, ...] = get_args(Status)

REASON_EMPTY_POLICY = "no retention policy configured"
REASON_NEWEST_COMPLETE = "newest complete"
REASON_PARTIAL_NEWER = "partial, newer than the newest complete snapshot"
REASON_PARTIAL_OLDER = "partial, older than the newest complete snapshot"
REASON_INCOMPLETE = "incomplete (no manifest)"
REASON_NOT_SELECTED = "not selected by the retention policy"

# (rule name, config attribute), in the order reasons are listed
_RULES: tuple[tuple[str, str], ...] = (
    ("last", "keep_last"),
    ("hourly", "keep_hourly"),
    ("daily", "keep_daily"),
    ("weekly", "keep_weekly"),
    ("monthly", "keep_monthly"),
    ("yearly", "keep_yearly"),
)


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")


def _utc_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SnapshotInfo:
    """What retention needs to know of one snapshot.

    *time* is when the snapshot started (timezone-aware). *status* is the
    manifest's status ("complete" or "partial"), or "incomplete" for a snapshot
    whose manifest was never committed (built from a data prefix that has no
    manifest).
    """

    id: str
    time: datetime
    status: Status = "complete"
    object_keys: frozenset[str] = field(default_factory=frozenset)
    referenced_keys: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        _require_aware(self.time, f"snapshot {self.id}: time")
        if self.status not in STATUSES:
            raise ValueError(f"snapshot {self.id}: unknown status {self.status!r}")

    @property
    def keys(self) -> frozenset[str]:
        """Every key this snapshot needs: its own objects and the ones it references."""
        return self.object_keys | self.referenced_keys


@dataclass(frozen=True)
class Decision:
    """Keep or drop one snapshot, with the reasons (why kept, or why dropped)."""

    snapshot: SnapshotInfo
    keep: bool
    reasons: tuple[str, ...]
    #: set when the snapshot is kept only because Object Lock forbids deleting it
    locked_until: datetime | None = None


@dataclass(frozen=True)
class PrunePlan:
    """The outcome of `plan_prune`: one decision per snapshot, newest first."""

    decisions: tuple[Decision, ...]
    #: keys that may be deleted, sorted; none is used by a kept snapshot or locked
    deletable_keys: tuple[str, ...]
    policy_empty: bool

    @property
    def kept(self) -> tuple[SnapshotInfo, ...]:
        return tuple(d.snapshot for d in self.decisions if d.keep)

    @property
    def dropped(self) -> tuple[SnapshotInfo, ...]:
        return tuple(d.snapshot for d in self.decisions if not d.keep)

    @property
    def kept_ids(self) -> frozenset[str]:
        return frozenset(s.id for s in self.kept)

    @property
    def dropped_ids(self) -> frozenset[str]:
        return frozenset(s.id for s in self.dropped)

    def decision(self, snapshot_id: str) -> Decision:
        """Given a snapshot id, return its decision. Raise KeyError if unknown."""
        for d in self.decisions:
            if d.snapshot.id == snapshot_id:
                return d
        raise KeyError(snapshot_id)


def _period(rule: str, when: datetime) -> str:
    """Given a rule and a time, return the name of the UTC calendar period it falls in."""
    t = when.astimezone(UTC)
    if rule == "hourly":
        return t.strftime("%Y-%m-%d %H:00Z")
    if rule == "daily":
        return t.strftime("%Y-%m-%d")
    if rule == "weekly":
        iso = t.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    if rule == "monthly":
        return t.strftime("%Y-%m")
    if rule == "yearly":
        return t.strftime("%Y")
    raise ValueError(f"unknown retention rule {rule!r}")


def _apply_rule(
    rule: str, count: int, newest_first: list[SnapshotInfo]
) -> Iterator[tuple[str, str]]:
    """Given a rule, its count and complete snapshots newest first, yield (id, reason)."""
    if count <= 0 or not newest_first:
        return
    kept = 0
    last_period: str | None = None
    oldest = len(newest_first) - 1
    for nr, snap in enumerate(newest_first):
        period = f"#{nr + 1}" if rule == "last" else _period(rule, snap.time)
        if period != last_period:
            last_period = period
            kept += 1
            yield snap.id, f"{rule} {period}"
        elif nr == oldest:
            kept += 1
            yield snap.id, f"{rule} {period} (oldest complete: keep_{rule}={count} not yet filled)"
        if kept >= count:
            return


def _sorted_newest_first(snapshots: Iterable[SnapshotInfo]) -> list[SnapshotInfo]:
    return sorted(snapshots, key=lambda s: (s.time.astimezone(UTC), s.id), reverse=True)


def plan_prune(
    snapshots: Iterable[SnapshotInfo],
    policy: RetentionConfig,
    now: datetime,
    *,
    retention_until: Callable[[str], datetime | None] | None = None,
    incomplete_grace: timedelta = timedelta(0),
) -> PrunePlan:
    """Given one host's snapshots, a retention policy and the current time, return the plan.

    See the module docstring for the rules. Raise ValueError on a naive *now* or
    retain-until date, a duplicate snapshot id or a negative keep_* count.
    """
    _require_aware(now, "now")
    ordered = _sorted_newest_first(snapshots)
    seen: set[str] = set()
    for snap in ordered:
        if snap.id in seen:
            raise ValueError(f"snapshot {snap.id} is listed twice")
        seen.add(snap.id)
    for _, attr in _RULES:
        if getattr(policy, attr) < 0:
            raise ValueError(f"retention {attr} must be >= 0, got {getattr(policy, attr)}")

    if policy.is_empty():
        decisions = tuple(Decision(s, True, (REASON_EMPTY_POLICY,)) for s in ordered)
        return PrunePlan(decisions, (), policy_empty=True)

    complete = [s for s in ordered if s.status == "complete"]
    newest_complete = complete[0] if complete else None

    keep_reasons: dict[str, list[str]] = {s.id: [] for s in ordered}
    drop_reasons: dict[str, str] = {}
    if newest_complete is not None:
        keep_reasons[newest_complete.id].append(REASON_NEWEST_COMPLETE)
    for rule, attr in _RULES:
        for sid, reason in _apply_rule(rule, getattr(policy, attr), complete):
            keep_reasons[sid].append(reason)

    grace_start = now - incomplete_grace
    for snap in ordered:
        if snap.status == "partial":
            if newest_complete is None or snap.time > newest_complete.time:
                keep_reasons[snap.id].append(REASON_PARTIAL_NEWER)
            else:
                drop_reasons[snap.id] = REASON_PARTIAL_OLDER
        elif snap.status == "incomplete":
            if incomplete_grace > timedelta(0) and snap.time > grace_start:
                keep_reasons[snap.id].append(
                    f"incomplete, started within the {incomplete_grace} grace period"
                    " (may still be running)"
                )
            else:
                drop_reasons[snap.id] = REASON_INCOMPLETE
        elif not keep_reasons[snap.id]:
            drop_reasons[snap.id] = REASON_NOT_SELECTED

    kept_by_policy = [s for s in ordered if keep_reasons[s.id]]
    protected: set[str] = set()
    for snap in kept_by_policy:
        protected |= snap.keys

    # Object Lock: a snapshot to drop that would delete a locked object is kept whole.
    # Decided against what the policy keeps, in one pass, so the order does not matter.
    locked_until: dict[str, datetime] = {}
    if retention_until is not None:
        lock_cache: dict[str, datetime | None] = {}
        for snap in ordered:
            if keep_reasons[snap.id]:
                continue
            latest: datetime | None = None
            for key in sorted(snap.keys - protected):
                if key not in lock_cache:
                    until = retention_until(key)
                    if until is not None:
                        _require_aware(until, f"retain-until of {key}")
                    lock_cache[key] = until
                until = lock_cache[key]
                if until is not None and until > now and (latest is None or until > latest):
                    latest = until
            if latest is not None:
                locked_until[snap.id] = latest

    decisions_list: list[Decision] = []
    keep_keys: set[str] = set(protected)
    drop_keys: set[str] = set()
    for snap in ordered:
        if keep_reasons[snap.id]:
            decisions_list.append(Decision(snap, True, tuple(keep_reasons[snap.id])))
        elif snap.id in locked_until:
            until = locked_until[snap.id]
            reasons = (
                f"under Object Lock until {_utc_text(until)}",
                f"otherwise dropped: {drop_reasons[snap.id]}",
            )
            decisions_list.append(Decision(snap, True, reasons, locked_until=until))
            keep_keys |= snap.keys
        else:
            decisions_list.append(Decision(snap, False, (drop_reasons[snap.id],)))
            drop_keys |= snap.keys

    return PrunePlan(
        tuple(decisions_list),
        tuple(sorted(drop_keys - keep_keys)),
        policy_empty=False,
    )
