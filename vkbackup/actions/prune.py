"""`vkbackup prune`: delete what the retention policy does not keep, safely.

Per host, under the host's lock (the one a snapshot takes, so prune and
snapshot of one host never run together):

1. Gather: every manifest (a manifest that cannot be read stops the prune of
   its host: its references are unknown), and every key under data/<host>/.
   A snapshot's own keys are its manifest, the objects it uploaded and any
   other key under its data prefix; its referenced keys are the objects it
   reuses from earlier snapshots. A data prefix without a manifest is an
   *incomplete* snapshot (a crashed run), minus any key a manifest still
   references (the data of a pruned snapshot that later ones reuse).
2. Plan: `vkbackup.retention.plan_prune` with the config's keep_* rules, the
   storage's Object Lock dates and a grace period for incomplete snapshots
   (a run that started less than INCOMPLETE_GRACE ago may still be uploading).
3. Delete: the manifests of dropped snapshots FIRST (a half-pruned snapshot
   is then never listed as restorable; if a manifest cannot be deleted, none
   of that snapshot's objects are), then the objects no kept snapshot uses,
   then the verify records of snapshots that no longer exist, then multipart
   uploads (or local temporary files) of the host older than STALE_UPLOAD_AGE,
   then the streamed WAL no kept base backup needs (`vkbackup.pitr.retention`:
   what was stored before the oldest kept base backup's snapshot started,
   less [pitr] skew; each record before its object), naming any gap left.

`dry_run` plans and reports without taking the lock or deleting anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from vkbackup import catalog, layout, lock
from vkbackup.common import iso, utcnow
from vkbackup.config.model import RetentionConfig
from vkbackup.errors import (
    IntegrityError,
    ObjectNotFoundError,
    PartialFailure,
    VkError,
)
from vkbackup.logs import get_logger
from vkbackup.pitr import wal as pitr_wal
from vkbackup.pitr.retention import WalPrunePlan, plan_wal_prune
from vkbackup.pitr.retention import horizon as wal_horizon
from vkbackup.progress import human_bytes
from vkbackup.retention import PrunePlan, SnapshotInfo, plan_prune
from vkbackup.storage.base import ObjectInfo, Storage

log = get_logger("prune")

INCOMPLETE_GRACE = timedelta(hours=6)
ORPHAN_AGE = timedelta(hours=1)  # a WAL partial no record names, this old: left over
STALE_UPLOAD_AGE = timedelta(hours=24)
LOCK_ID = "prune"


@dataclass
class HostState:
    """What gather() found of one host's snapshots."""

    host: str
    infos: list[SnapshotInfo]
    sizes: dict[str, int]  # key -> bytes, for every key listed
    manifest_ids: set[str]
    #: data prefixes with no manifest whose keys are all referenced by manifests:
    #: the data of pruned snapshots that later snapshots reuse (kept, not "incomplete")
    retained_prefixes: dict[str, int] = field(default_factory=dict)  # id -> key count
    #: snapshot id -> the ids of the snapshots that took the base backups it uses
    base_origins: dict[str, set[str]] = field(default_factory=dict)


def _host_of(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] in ("data", "snapshots", "verify"):
        return parts[1]
    if len(parts) == 2 and parts[0] == "locks" and parts[1].endswith(".lock"):
        return parts[1][: -len(".lock")]
    return None


def hosts_in_storage(storage: Storage) -> list[str]:
    """Return every host that has manifests or data in storage."""
    hosts: set[str] = set()
    for prefix in ("snapshots/", "data/"):
        for info in storage.list(prefix):
            h = _host_of(info.key)
            if h and layout.NAME_RE.match(h):
                hosts.add(h)
    return sorted(hosts)


def gather(storage: Storage, host: str, now: datetime | None = None) -> HostState:
    """Given a host, return what prune needs to know of its snapshots.
    Raise IntegrityError naming a manifest that cannot be read.

    A manifest dated more than layout.FUTURE_TOLERANCE after *now* (default:
    the clock) is no snapshot (catalog.list_snapshots warns of it): it is
    neither the newest one the policy keeps, nor deleted. Its data prefix
    looks like an incomplete snapshot started in the future, which the
    incomplete grace keeps."""
    sizes: dict[str, int] = {}
    for info in storage.list(layout.manifests_prefix(host)):
        sizes[info.key] = info.size
    by_prefix: dict[str, set[str]] = {}
    base = layout.data_prefix(host)
    for info in storage.list(base):
        sizes[info.key] = info.size
        sid = info.key[len(base) :].split("/", 1)[0]
        if layout.ID_RE.match(sid):
            by_prefix.setdefault(sid, set()).add(info.key)
    manifests = []
    for h, sid in catalog.list_snapshots(storage, host, now=now):
        try:
            manifests.append(catalog.load_manifest(storage, h, sid, now=now))
        except VkError as e:
            raise IntegrityError(
                f"prune of host {host} refused: {layout.manifest_key(h, sid)} cannot be read "
                f"({e}); it may reference objects of other snapshots",
                hint="check it with `vkbackup verify`; if the snapshot is lost, delete that "
                "manifest by hand, then prune again",
            ) from e
    referenced_anywhere: set[str] = set()
    infos: list[SnapshotInfo] = []
    base_origins = {
        m.id: {m.origin(o) for o in m.objects if o.role == "pg-base"} for m in manifests
    }
    for m in manifests:
        own = {layout.manifest_key(m.host, m.id)} | by_prefix.get(m.id, set())
        own |= {o.key for o in m.objects if m.origin(o) == m.id}
        refs = {o.key for o in m.objects if m.origin(o) != m.id}
        referenced_anywhere |= refs
        infos.append(
            SnapshotInfo(
                id=m.id,
                time=layout.snapshot_time(m.id),
                status="partial" if m.status == "partial" else "complete",
                object_keys=frozenset(own),
                referenced_keys=frozenset(refs),
            )
        )
    manifest_ids = {m.id for m in manifests}
    retained: dict[str, int] = {}
    for sid, keys in sorted(by_prefix.items()):
        if sid in manifest_ids:
            continue
        loose = keys - referenced_anywhere
        if not loose:
            retained[sid] = len(keys)
            continue
        infos.append(
            SnapshotInfo(
                id=sid,
                time=layout.snapshot_time(sid),
                status="incomplete",
                object_keys=frozenset(loose),
            )
        )
    return HostState(host, infos, sizes, manifest_ids, retained, base_origins)


@dataclass
class HostPrune:
    """One host's prune: the plan, and what was (or would be) deleted or failed."""

    host: str
    plan: PrunePlan
    dry_run: bool
    sizes: dict[str, int]
    retained_prefixes: dict[str, int]
    deleted: list[str] = field(default_factory=list)  # or: would delete (dry run)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, error)
    skipped: list[str] = field(default_factory=list)  # snapshots whose manifest stayed
    verify_records: list[str] = field(default_factory=list)
    aborted_uploads: list[tuple[str, str]] = field(default_factory=list)  # (key, started)
    wal: WalPrunePlan | None = None  # streamed WAL (point-in-time recovery)
    wal_deleted: list[str] = field(default_factory=list)  # or: would delete (dry run)
    wal_unreadable: list[str] = field(default_factory=list)  # records kept unread
    wal_orphans: list[str] = field(default_factory=list)  # replaced partials left over
    now: datetime = field(default_factory=utcnow)

    @property
    def bytes_freed(self) -> int:
        return sum(self.sizes.get(k, 0) for k in self.deleted)

    @property
    def kept_shared(self) -> int:
        """Keys of dropped snapshots kept because a kept snapshot uses them."""
        dropped: set[str] = set()
        for s in self.plan.dropped:
            dropped |= s.keys
        return len(dropped - set(self.plan.deletable_keys))

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "dry_run": self.dry_run,
            "policy_empty": self.plan.policy_empty,
            "snapshots": [
                {
                    "id": d.snapshot.id,
                    "time": iso(d.snapshot.time),
                    "status": d.snapshot.status,
                    "keep": d.keep,
                    "reasons": list(d.reasons),
                    "locked_until": iso(d.locked_until) if d.locked_until else None,
                }
                for d in self.plan.decisions
            ],
            "deleted": self.deleted,
            "bytes_freed": self.bytes_freed,
            "failed": [{"key": k, "error": e} for k, e in self.failed],
            "not_pruned": self.skipped,
            "kept_shared_objects": self.kept_shared,
            "retained_prefixes": self.retained_prefixes,
            "verify_records_deleted": self.verify_records,
            "aborted_uploads": [{"key": k, "started": t} for k, t in self.aborted_uploads],
            "wal": None
            if self.wal is None
            else {
                "horizon": iso(self.wal.horizon) if self.wal.horizon else None,
                "deleted": self.wal_deleted,
                "kept": self.wal.kept,
                "gaps": list(self.wal.gaps),
                "unreadable": self.wal_unreadable,
            },
        }


def _retention_until(storage: Storage) -> Any:
    def until(key: str) -> datetime | None:
        try:
            return storage.retention_until(key)
        except ObjectNotFoundError:
            return None

    return until


def _delete(storage: Storage, key: str, result: HostPrune, done: list[str]) -> bool:
    """Delete *key*; on success add it to *done*, on failure to result.failed."""
    try:
        storage.delete(key)
    except VkError as e:
        result.failed.append((key, str(e)))
        log.warning("could not delete %s: %s", key, e)
        return False
    log.debug("deleted %s", key)
    done.append(key)
    return True


def _belongs_to(key: str, host: str) -> bool:
    return _host_of(key) == host


def _stale_uploads(
    storage: Storage, now: datetime, older_than: timedelta, host: str | None
) -> list[tuple[str, str, datetime]]:
    out = []
    for key, upload_id, started in storage.list_incomplete_uploads():
        if now - started < older_than:
            continue
        if host is None or _belongs_to(key, host):
            out.append((key, upload_id, started))
    return sorted(out)


def prune_host(
    storage: Storage,
    host: str,
    policy: RetentionConfig,
    *,
    now: datetime,
    dry_run: bool = False,
    grace: timedelta = INCOMPLETE_GRACE,
    upload_age: timedelta = STALE_UPLOAD_AGE,
    break_lock: bool = False,
    wal_skew: timedelta = timedelta(minutes=5),
) -> HostPrune:
    """Given a host and the policy, plan and (unless *dry_run*) carry out its prune
    (see the module docstring). Raise LockError if a snapshot of the host runs,
    IntegrityError if a manifest cannot be read; deletions that fail are
    recorded in the result, not raised."""
    held = None if dry_run else lock.acquire(storage, host, LOCK_ID, break_lock=break_lock)
    try:
        state = gather(storage, host, now)
        plan = plan_prune(
            state.infos,
            policy,
            now,
            retention_until=_retention_until(storage),
            incomplete_grace=grace,
        )
        result = HostPrune(host, plan, dry_run, state.sizes, state.retained_prefixes, now=now)
        kept_keys: set[str] = set()
        for s in plan.kept:
            kept_keys |= s.keys
        deletable = set(plan.deletable_keys)
        if deletable & kept_keys:  # the plan's promise, checked before anything goes
            raise IntegrityError(
                f"prune of host {host}: the plan would delete keys a kept snapshot uses: "
                + ", ".join(sorted(deletable & kept_keys)[:5])
            )
        dropped_manifests = [
            (s, layout.manifest_key(host, s.id)) for s in plan.dropped if s.id in state.manifest_ids
        ]
        stale = _stale_uploads(storage, now, upload_age, host)
        result.aborted_uploads = [(k, iso(t)) for k, _, t in stale]
        if dry_run:
            result.deleted = [k for _, k in dropped_manifests] + sorted(
                deletable - {k for _, k in dropped_manifests}
            )
            result.verify_records = _stale_records(storage, host, state.manifest_ids, plan)
            _prune_wal(storage, state, plan, result, wal_skew)
            for rec in result.wal.delete if result.wal else ():
                result.wal_deleted += [pitr_wal.record_key(rec.key), rec.key]
            result.wal_deleted += result.wal_orphans
            return result
        # 1. manifests first: once gone, the snapshot is no longer listed or restorable.
        gone: set[str] = set()
        for snap, mkey in dropped_manifests:
            if _delete(storage, mkey, result, result.deleted):
                gone.add(snap.id)
            else:
                result.skipped.append(snap.id)
        # 2. objects no kept snapshot uses, except those of a snapshot whose manifest stayed.
        still_listed: set[str] = set()
        for snap in plan.dropped:
            if snap.id in result.skipped:
                still_listed |= snap.keys
        for key in sorted(deletable - {k for _, k in dropped_manifests} - still_listed):
            _delete(storage, key, result, result.deleted)
        # 3. verify records of snapshots that no longer exist.
        for key in _stale_records(storage, host, state.manifest_ids - gone, None):
            _delete(storage, key, result, result.verify_records)
        # 4. uploads that never finished (no snapshot of this host runs: we hold its lock).
        for key, upload_id, _ in stale:
            try:
                storage.abort_upload(key, upload_id)
            except VkError as e:
                result.failed.append((key, f"abort upload {upload_id}: {e}"))
        # 5. streamed WAL no kept base backup needs (record first: no record, no use)
        _prune_wal(storage, state, plan, result, wal_skew)
        for rec in result.wal.delete if result.wal else ():
            if _delete(storage, pitr_wal.record_key(rec.key), result, result.wal_deleted):
                _delete(storage, rec.key, result, result.wal_deleted)
        for key in result.wal_orphans:
            _delete(storage, key, result, result.wal_deleted)
        return result
    finally:
        if held is not None:
            try:
                lock.release(storage, host, held)
            except VkError as e:
                log.warning("could not release the lock of %s: %s", host, e)


def _prune_wal(
    storage: Storage, state: HostState, plan: PrunePlan, result: HostPrune, skew: timedelta
) -> None:
    """Plan the host's WAL prune (`vkbackup.pitr.retention`) into *result*: the
    records are read (signatures checked); one that cannot be read is kept, named."""
    records: list[pitr_wal.WalRecord] = []
    objects: list[ObjectInfo] = []
    for info in storage.list(pitr_wal.wal_prefix(state.host)):
        if pitr_wal.parse_object_key(info.key) is not None:
            objects.append(info)
        if pitr_wal.parse_record_key(info.key) is None:
            continue
        try:
            data = catalog.read_small(storage, info.key, pitr_wal.MAX_RECORD_BYTES)
            records.append(pitr_wal.WalRecord.decode(data, info.key))
        except VkError as e:
            result.wal_unreadable.append(f"{info.key}: {e}")
            log.warning("%s: kept, its record cannot be read: %s", info.key, e)
    if not records and not result.wal_unreadable:
        return
    # a snapshot whose manifest could not be deleted stays restorable: its WAL too
    kept_ids = {s.id for s in plan.kept} | set(result.skipped)
    origins = {o for sid in kept_ids for o in state.base_origins.get(sid, set())}
    times = [layout.snapshot_time(o) for o in origins if layout.ID_RE.match(o)]
    result.wal = plan_wal_prune(records, wal_horizon(times, skew))
    # partials the stream replaced but could not delete (a crash between the two):
    # no record names them; an hour old, so none is still being uploaded
    named = {r.key for r in records}
    result.wal_orphans = sorted(
        o.key
        for o in objects
        if o.key not in named
        and ".partial." in o.key
        and o.modified is not None
        and result.now - o.modified > ORPHAN_AGE
        and not result.wal_unreadable
    )
    for gap in result.wal.gaps:
        log.warning("host %s: WAL gap: %s (a restore cannot replay across it)", state.host, gap)


def _stale_records(
    storage: Storage, host: str, existing: set[str], plan: PrunePlan | None
) -> list[str]:
    """Verify records of *host* whose snapshot does not (or, after *plan*, will not)
    exist, and signatures (KEY.json.sig) of manifests and verify records that do
    not exist: a run killed between writing a signature and its record leaves one."""
    alive = set(existing)
    if plan is not None:
        alive -= plan.dropped_ids
    out = []
    listed: set[str] = set()
    signatures: list[str] = []
    for prefix in (f"verify/{host}/", layout.manifests_prefix(host)):
        for info in storage.list(prefix):
            listed.add(info.key)
            if info.key.endswith(".json" + layout.SIGNATURE_SUFFIX):
                signatures.append(info.key)
                continue
            if not info.key.startswith("verify/"):
                continue
            name = info.key.rsplit("/", 1)[-1]
            sid = name[: -len(".json")] if name.endswith(".json") else ""
            if layout.ID_RE.match(sid) and sid not in alive:
                out.append(info.key)
    for sig in signatures:
        record = sig[: -len(layout.SIGNATURE_SUFFIX)]
        if record not in listed:
            out.append(sig)
    return sorted(out)


@dataclass
class PruneReport:
    """Every host's prune, the errors of hosts whose prune failed, and the
    uploads aborted outside any host's keys."""

    hosts: list[HostPrune]
    dry_run: bool
    errors: list[tuple[str, VkError]] = field(default_factory=list)  # (host, error)
    aborted_other: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "hosts": [h.to_json() for h in self.hosts],
            "errors": [{"host": h, "error": str(e)} for h, e in self.errors],
            "aborted_uploads_other": [{"key": k, "started": t} for k, t in self.aborted_other],
        }

    def failure(self) -> VkError | None:
        """Return the error to exit with (a host's error, or the deletions that
        failed), or None if everything was pruned."""
        failed = [(h.host, k, e) for h in self.hosts for k, e in h.failed]
        if len(self.errors) == 1 and not failed and not self.hosts:
            return self.errors[0][1]
        parts = [f"host {h}: {e}" for h, e in self.errors]
        parts += [f"{k}: {e}" for _, k, e in failed]
        if not parts:
            return None
        if not self.hosts:
            return VkError("prune failed: " + "; ".join(parts))
        return PartialFailure(
            "prune did not finish: " + "; ".join(parts),
            hint="run prune again: it continues where this one stopped",
        )


def run_prune(
    storage: Storage,
    policy: RetentionConfig,
    *,
    hosts: Sequence[str] | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
    grace: timedelta = INCOMPLETE_GRACE,
    upload_age: timedelta = STALE_UPLOAD_AGE,
    break_lock: bool = False,
    wal_skew: timedelta = timedelta(minutes=5),
) -> PruneReport:
    """Prune every host in storage (or *hosts*) and return the report. *now*
    defaults to the current time. Errors of one host are recorded and the
    others pruned; see PruneReport.failure(). Without *hosts*, stale uploads
    under no host's keys are aborted too."""
    now = now or utcnow()
    report = PruneReport([], dry_run)
    names = list(hosts) if hosts else hosts_in_storage(storage)
    for h in names:
        try:
            report.hosts.append(
                prune_host(
                    storage,
                    h,
                    policy,
                    now=now,
                    dry_run=dry_run,
                    grace=grace,
                    upload_age=upload_age,
                    break_lock=break_lock,
                    wal_skew=wal_skew,
                )
            )
        except VkError as e:
            log.error("prune of host %s failed: %s", h, e)
            report.errors.append((h, e))
    if not hosts:
        # uploads under no host's keys (not written by vkbackup's layout)
        for key, upload_id, started in _stale_uploads(storage, now, upload_age, None):
            if _host_of(key) is not None:
                continue
            report.aborted_other.append((key, iso(started)))
            if not dry_run:
                try:
                    storage.abort_upload(key, upload_id)
                except VkError as e:
                    report.errors.append(("-", e))
    return report


def _policy_text(plan: PrunePlan) -> str:
    return "no retention policy configured: nothing is deleted" if plan.policy_empty else ""


def format_prune(report: PruneReport) -> list[str]:
    """Given a report, return what was kept and why, and what was (or would be) deleted."""
    out: list[str] = []
    verb = "would delete" if report.dry_run else "deleted"
    for hp in report.hosts:
        plan = hp.plan
        out.append(
            f"host {hp.host}: {len(plan.decisions)} snapshots, keep {len(plan.kept)}, "
            f"drop {len(plan.dropped)}" + (" (dry run)" if report.dry_run else "")
        )
        if plan.policy_empty:
            out.append(f"  {_policy_text(plan)}")
        for d in plan.decisions:
            what = "keep" if d.keep else "drop"
            out.append(f"  {what}  {d.snapshot.id}  {d.snapshot.status:10} {'; '.join(d.reasons)}")
        manifests = [k for k in hp.deleted if k.startswith("snapshots/")]
        objects = [k for k in hp.deleted if k.startswith("data/")]
        out.append(
            f"  {verb} {len(manifests)} manifests and {len(objects)} objects "
            f"({human_bytes(hp.bytes_freed)})"
            + (f", {len(hp.verify_records)} verify records" if hp.verify_records else "")
        )
        if hp.kept_shared:
            out.append(
                f"  kept {hp.kept_shared} objects of dropped snapshots: kept snapshots reuse them"
            )
        for sid, n in sorted(hp.retained_prefixes.items()):
            out.append(f"  kept {n} objects of pruned snapshot {sid}: later snapshots reuse them")
        if hp.wal is not None:
            horizon_text = (
                f"stored before {iso(hp.wal.horizon)}"
                if hp.wal.horizon
                else "none: no kept snapshot holds a base backup"
            )
            orphans = f", and {len(hp.wal_orphans)} replaced partials" if hp.wal_orphans else ""
            out.append(
                f"  WAL: {verb} {len(hp.wal.delete)} objects ({horizon_text}){orphans}, "
                f"kept {hp.wal.kept}"
            )
            for gap in hp.wal.gaps:
                out.append(f"  WAL gap: {gap} (a restore cannot replay across it)")
            for bad in hp.wal_unreadable:
                out.append(f"  WAL kept unread: {bad}")
        for k, t in hp.aborted_uploads:
            out.append(f"  {'would abort' if report.dry_run else 'aborted'} upload {k} ({t})")
        for sid in hp.skipped:
            out.append(f"  not pruned: {sid} (its manifest could not be deleted)")
        for key, err in hp.failed:
            out.append(f"  failed: {key}: {err}")
    for k, t in report.aborted_other:
        out.append(f"{'would abort' if report.dry_run else 'aborted'} upload {k} ({t})")
    for h, exc in report.errors:
        out.append(f"host {h}: prune failed: {exc}")
    return out
