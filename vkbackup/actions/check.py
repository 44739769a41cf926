"""`vkbackup check`: is every host's backup fresh?

For each host, three things must be recent enough, each against its own limit:

    snapshot  the newest complete snapshot      (age: from its id's time, as the drill's RPO)
    verify    the newest passing verify record  (age: from the time the verify ended)
    drill     the newest successful drill       (age: from the time the drill started)

One that is older than its limit, or absent ("none on record"), is stale. A
failed verify or drill proves nothing, so it never counts as fresh; a light
(`--no-decrypt`) verify that passed does. Records are read through the
storage the CLI opens, which checks their signatures: a forged, unsigned or
moved record counts as absent, as does one dated more than
`layout.FUTURE_TOLERANCE` in the future (it would keep a host "fresh" for
years).

`assess` is the pure part (records, limits and a clock in, findings out);
`gather` reads what storage holds of one host; `run_check` does both for
every host. The check reads storage only and needs no identity.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from vkbackup import catalog, layout, verify_records
from vkbackup.actions.drill import last_drill
from vkbackup.common import iso, utcnow
from vkbackup.config import Config
from vkbackup.durations import format_duration
from vkbackup.errors import IntegrityError, ObjectNotFoundError, VkError
from vkbackup.logs import get_logger
from vkbackup.storage.base import Storage

log = get_logger("check")

FORMAT = "vkbackup-check/1"
KINDS: tuple[str, ...] = ("snapshot", "verify", "drill")
WHAT = {
    "snapshot": "newest complete snapshot",
    "verify": "newest passing verify",
    "drill": "newest successful drill",
}
#: what makes each kind fresh again, for the hint of a failed check
FIX = {
    "snapshot": "vkbackup snapshot {host}",
    "verify": "vkbackup verify --latest --host {host}",
    "drill": "vkbackup drill --host {host} --to SCRATCH",
}


@dataclass(frozen=True)
class Record:
    """One record's time, and what it is (a snapshot id, the id of the snapshot a
    verify checked, a drill's start time)."""

    time: datetime
    ref: str


@dataclass(frozen=True)
class OnRecord:
    """What storage holds of one host, per kind: candidate records, any order."""

    host: str
    snapshot: tuple[Record, ...] = ()
    verify: tuple[Record, ...] = ()
    drill: tuple[Record, ...] = ()


@dataclass(frozen=True)
class Limits:
    snapshot: timedelta
    verify: timedelta
    drill: timedelta

    @classmethod
    def from_config(cls, cfg: Config) -> Limits:
        """The [check] limits; with no check.max_drill_age, drill.max_age_days."""
        c = cfg.check
        drill = c.max_drill_age or timedelta(days=cfg.drill.max_age_days)
        return cls(snapshot=c.max_age, verify=c.max_verify_age, drill=drill)

    def of(self, kind: str) -> timedelta:
        return {"snapshot": self.snapshot, "verify": self.verify, "drill": self.drill}[kind]


@dataclass(frozen=True)
class Finding:
    """One kind of one host: its newest record (None: none on record), its age
    and its limit, and the records left out as dated in the future."""

    host: str
    kind: str
    limit: timedelta
    newest: Record | None
    age: timedelta | None
    future: tuple[Record, ...] = ()

    @property
    def stale(self) -> bool:
        return self.age is None or self.age > self.limit

    @property
    def what(self) -> str:
        return WHAT[self.kind]

    def describe(self) -> str:
        """One line naming the host, the kind, the age and the limit, e.g.
        `host prod: newest complete snapshot is 27h 3m old (2026-01-02T02:15:00Z; limit 26h)`
        or `host prod: newest passing verify: none on record (limit 8d)`."""
        limit = format_duration(self.limit)
        if self.newest is None or self.age is None:
            return f"host {self.host}: {self.what}: none on record (limit {limit})"
        return (
            f"host {self.host}: {self.what} is {format_duration(self.age)} old "
            f"({iso(self.newest.time)}; limit {limit})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "what": self.what,
            "newest": iso(self.newest.time) if self.newest else None,
            "ref": self.newest.ref if self.newest else None,
            "age_seconds": int(self.age.total_seconds()) if self.age is not None else None,
            "limit_seconds": int(self.limit.total_seconds()),
            "stale": self.stale,
            "ignored_future": [f"{r.ref} ({iso(r.time)})" for r in self.future],
        }


@dataclass(frozen=True)
class HostCheck:
    """One host's findings, one per kind (KINDS order). Also monitoring's
    `HostAges`: the textfile's ages come from here."""

    host: str
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not any(f.stale for f in self.findings)

    def finding(self, kind: str) -> Finding:
        return next(f for f in self.findings if f.kind == kind)

    def _age(self, kind: str) -> float | None:
        age = self.finding(kind).age
        return None if age is None else age.total_seconds()

    @property
    def snapshot_age_seconds(self) -> float | None:
        return self._age("snapshot")

    @property
    def verify_age_seconds(self) -> float | None:
        return self._age("verify")

    @property
    def drill_age_seconds(self) -> float | None:
        return self._age("drill")


@dataclass(frozen=True)
class CheckReport:
    time: datetime
    storage: str
    limits: Limits
    hosts: tuple[HostCheck, ...]

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)

    @property
    def stale(self) -> list[Finding]:
        return [f for h in self.hosts for f in h.findings if f.stale]

    def to_json(self) -> dict[str, Any]:
        """The `vkbackup check --json` document (format "vkbackup-check/1")."""
        return {
            "format": FORMAT,
            "time": iso(self.time),
            "storage": self.storage,
            "ok": self.ok,
            "limits": {k: int(self.limits.of(k).total_seconds()) for k in KINDS},
            "hosts": [
                {"host": h.host, "ok": h.ok, "checks": [f.to_json() for f in h.findings]}
                for h in self.hosts
            ],
            "stale": [f.describe() for f in self.stale],
        }

    def failure(self) -> VkError | None:
        """The error to exit with (1), naming every stale host and kind; None if fresh."""
        stale = self.stale
        if not stale:
            return None
        fixes = [FIX[f.kind].format(host=f.host) for f in stale]
        return VkError(
            "stale:\n  " + "\n  ".join(f.describe() for f in stale),
            hint="; ".join(dict.fromkeys(fixes)),
        )


# -- the pure part -------------------------------------------------------------------


def newest(records: Iterable[Record], now: datetime) -> tuple[Record | None, tuple[Record, ...]]:
    """Given records and the time, return the newest one not dated more than
    FUTURE_TOLERANCE after *now* (None if there is none), and those that are."""
    usable: list[Record] = []
    future: list[Record] = []
    for r in records:
        (future if layout.is_future(r.time, now) else usable).append(r)
    best = max(usable, key=lambda r: r.time, default=None)
    return best, tuple(sorted(future, key=lambda r: r.time))


def assess(on_record: OnRecord, limits: Limits, now: datetime) -> HostCheck:
    """Given what storage holds of a host, the limits and the time, return the
    host's findings: for each kind its newest usable record, age (a record a
    little ahead of the clock is zero seconds old) and whether it is stale."""
    findings = []
    for kind in KINDS:
        best, future = newest(getattr(on_record, kind), now)
        age = None if best is None else max(now - best.time, timedelta(0))
        findings.append(Finding(on_record.host, kind, limits.of(kind), best, age, future))
    return HostCheck(on_record.host, tuple(findings))


# -- reading storage -------------------------------------------------------------------


def _when(text: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _newest_complete(storage: Storage, host: str, now: datetime) -> tuple[Record, ...]:
    for h, sid in reversed(catalog.list_snapshots(storage, host, now=now)):
        try:
            m = catalog.load_manifest(storage, h, sid, now=now)
        except ObjectNotFoundError:  # pruned meanwhile
            continue
        except IntegrityError as e:  # unsigned, forged, moved, malformed: not a snapshot
            log.warning("%s: ignored", e)
            continue
        if m.status == "complete":
            return (Record(layout.snapshot_time(sid), sid),)
    return ()


def gather(storage: Storage, host: str, now: datetime | None = None) -> OnRecord:
    """Given a host, return what storage holds of it: its newest complete
    snapshot, every passing verify record, and its newest successful drill.
    Records that cannot be read or whose signature does not check are left out
    (with a warning); a storage that cannot be reached raises StorageError."""
    now = now or utcnow()
    snapshots = _newest_complete(storage, host, now)
    verifies = []
    for rec in verify_records.load_records(storage, host).values():
        t = _when(rec.time)
        if rec.ok and t is not None:
            verifies.append(Record(t, rec.id))
    drills: list[Record] = []
    doc = last_drill(storage, host)
    if doc is not None and (t := _when(str(doc.get("started")))) is not None:
        drills.append(Record(t, str(doc["started"])))
    return OnRecord(host, snapshots, tuple(verifies), tuple(drills))


def check_hosts(
    storage: Storage, hosts: Sequence[str], limits: Limits, now: datetime | None = None
) -> CheckReport:
    """Given host names and the limits, return each host's freshness as of *now*
    (default: the clock)."""
    now = now or utcnow()
    checks = tuple(assess(gather(storage, h, now), limits, now) for h in hosts)
    return CheckReport(now, storage.describe(), limits, checks)


def hosts_to_check(cfg: Config, storage: Storage, host: str | None) -> list[str]:
    """The hosts `vkbackup check` looks at: *host* if given, else the configured
    hosts, else (a machine that only restores) every host with a snapshot."""
    if host is not None:
        return [host]
    if cfg.hosts:
        return sorted(cfg.hosts)
    return sorted({h for h, _ in catalog.list_snapshots(storage)})


def format_check(report: CheckReport) -> list[str]:
    """Given a report, return a small table: one line per host and kind."""
    rows = [("HOST", "CHECK", "NEWEST", "AGE", "LIMIT", "STATUS")]
    for h in report.hosts:
        for f in h.findings:
            rows.append(
                (
                    h.host,
                    f.what,
                    iso(f.newest.time) if f.newest else "none on record",
                    format_duration(f.age) if f.age is not None else "-",
                    format_duration(f.limit),
                    "STALE" if f.stale else "ok",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for h in report.hosts:
        for f in h.findings:
            for r in f.future:
                lines.append(f"  ignored (dated in the future): host {h.host} {f.kind} {r.ref}")
    return lines
