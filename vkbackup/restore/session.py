"""One restore of one snapshot onto one target: resolve the snapshot, decode its
private part once, derive the plan, run it, and report. `vkbackup restore` and
`vkbackup drill` both go through here (the drill is a restore with a report).

What each step does lives with the source that took the data
(`vkbackup/sources/*.py`) or, for host-wide steps, in `vkbackup.restore.runner`;
every shell text sent to the target is in `vkbackup.restore.target`.

Every object is checked against the manifest (size, sha256), authenticated
by age, and its plaintext checked against the size and sha256 the private
part recorded (`plain_checks`), before its last byte reaches the target; a step that fails stops the
restore before any service starts on bad data. Preflight refuses a target that
is not empty unless --force, or unless the target holds this snapshot's resume
state (a re-run after a failure resumes; a re-run after success changes nothing).

Hooks (`vkbackup.hooks`): the before_restore and after_restore hooks of the
snapshot's host ([hosts.NAME.hooks] of manifest.host) run on the target, the
before ones before the resume state is read or anything is written there (a
failure ends the restore: exit 1), the after ones once the plan ended, whatever
its outcome (a failure makes an ok restore "partial": exit 3). on_failure runs
last, on this machine, for every restore that did not end ok.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from vkbackup import catalog
from vkbackup.common import iso, utcnow
from vkbackup.config.model import HooksConfig, HostConfig
from vkbackup.crypto import Identity
from vkbackup.errors import HookError, Interrupted, ObjectNotFoundError, PartialFailure, VkError
from vkbackup.hooks import HookRunner
from vkbackup.layout import snapshot_time
from vkbackup.logs import get_logger
from vkbackup.manifest import Manifest
from vkbackup.progress import Progress
from vkbackup.restore.objects import PlainCheck
from vkbackup.restore.plan import Plan, derive_plan
from vkbackup.restore.playbook import Playbook
from vkbackup.restore.records import read_private
from vkbackup.restore.runner import Run, StepResult, run_plan
from vkbackup.restore.steps import PitrParams, StepContext
from vkbackup.storage.base import Storage
from vkbackup.transport.base import Transport

if TYPE_CHECKING:
    from vkbackup.pitr.recover import Target

log = get_logger("restore")
Connect = Callable[[HostConfig], Transport]


@dataclass
class RestoreReport:
    snapshot: str
    host: str
    target: str
    playbook: str
    started: str
    finished: str = ""
    status: str = "running"  # ok | partial (an after_restore hook failed) | failed
    rto_seconds: float = 0.0
    snapshot_age_seconds: float = 0.0
    # point-in-time recovery: how old the recovered database's data is at the start
    # (the target time, or the newest WAL replayed); None: no PITR step
    recovered_age_seconds: float | None = None
    steps: list[StepResult] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    exception: VkError | None = None  # the failure, for the CLI to map to an exit code
    hook_errors: list[str] = field(default_factory=list)  # after_restore hooks that failed

    @property
    def rpo_seconds(self) -> float:
        """The data age a restore brings back: the recovered database's with PITR,
        else the snapshot's."""
        if self.recovered_age_seconds is not None:
            return self.recovered_age_seconds
        return self.snapshot_age_seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot,
            "host": self.host,
            "target": self.target,
            "playbook": self.playbook,
            "started": self.started,
            "finished": self.finished,
            "status": self.status,
            "rto_seconds": round(self.rto_seconds, 2),
            "snapshot_age_seconds": round(self.snapshot_age_seconds, 1),
            "recovered_age_seconds": (
                None if self.recovered_age_seconds is None else round(self.recovered_age_seconds, 1)
            ),
            "rpo_seconds": round(self.rpo_seconds, 1),
            "steps": [s.__dict__ for s in self.steps],
            "verified": self.verified,
            "dns": self.dns,
            "warnings": self.warnings,
            "error": self.error,
            "hook_errors": self.hook_errors,
        }


def build_plan(
    storage: Storage,
    ref: str,
    identities: Sequence[Identity],
    playbook: Playbook,
    host: str | None = None,
    *,
    pitr: Target | None = None,
    skew: timedelta = timedelta(minutes=5),
) -> tuple[Manifest, Plan]:
    """The snapshot *ref* (of *host*) and its plan. With *pitr*, the plan recovers
    the snapshot's PITR database to that target (`vkbackup.pitr.recover`), and a
    *ref* of "latest" means the newest snapshot taken at or before it."""
    if pitr is not None and ref == "latest":
        from vkbackup.pitr.recover import snapshot_for

        ref = snapshot_for(storage, host, pitr)
    manifest = catalog.resolve(storage, ref, host)
    plan = derive_plan(manifest, read_private(manifest, identities), playbook)
    if pitr is not None:
        from vkbackup.pitr.recover import apply

        plan = apply(plan, manifest, storage, identities, pitr, skew)
    return manifest, plan


def _plain_check(note: object) -> PlainCheck | None:
    if not isinstance(note, dict):
        return None
    size, sha = note.get("plain_size"), note.get("plain_sha256")
    if isinstance(size, bool) or not isinstance(size, int) or not isinstance(sha, str):
        return None
    if size < 0 or len(sha) != 64 or sha.strip("0123456789abcdef"):
        return None
    return PlainCheck(size, sha)


def plain_checks(
    storage: Storage, manifest: Manifest, identities: Sequence[Identity]
) -> tuple[dict[str, PlainCheck], list[str]]:
    """Given a manifest whose private part is open, return each object's recorded
    plaintext size and sha256 (object key -> PlainCheck), and warnings.

    An object this snapshot uploaded is recorded in its own private part. A
    reused one is recorded in the private part of the snapshot that uploaded it:
    that manifest is read (its signature checked like any other) when it still
    exists. When it was pruned, or cannot be read (a warning says which), the
    object is still checked against the ciphertext size and sha256 this
    manifest pins, and authenticated by age."""
    notes = read_private(manifest, identities).object_notes
    out: dict[str, PlainCheck] = {}
    origins: dict[str, list[str]] = {}
    for obj in manifest.objects:
        check = _plain_check(notes.get(obj.key))
        if check is not None:
            out[obj.key] = check
        elif manifest.origin(obj) != manifest.id:
            origins.setdefault(manifest.origin(obj), []).append(obj.key)
    warnings: list[str] = []
    for origin, keys in origins.items():
        try:
            earlier = catalog.load_manifest(storage, manifest.host, origin)
            earlier_notes = read_private(earlier, identities).object_notes
        except ObjectNotFoundError:
            log.info("%s: pruned; its reused objects are checked by ciphertext only", origin)
            continue
        except VkError as e:
            warnings.append(f"snapshot {origin} (reused objects' origin) cannot be read: {e}")
            continue
        for key in keys:
            check = _plain_check(earlier_notes.get(key))
            if check is not None:
                out[key] = check
    return out, warnings


def run_restore(
    plan: Plan,
    manifest: Manifest,
    target: HostConfig,
    *,
    storage: Storage,
    connect: Connect,
    identities: Sequence[Identity],
    force: bool = False,
    progress: Progress | None = None,
    hooks: HooksConfig | None = None,
) -> RestoreReport:
    """Given a plan of *manifest*'s snapshot, run it on *target* and return the report
    (status "failed" with the step and its error when one fails; never raises a
    step's VkError, which is in report.exception for the CLI's exit code).

    *hooks* are the [hosts.NAME.hooks] of the snapshot's host (None: none; a
    drill passes none): before_restore and after_restore run on *target*, a
    failing before hook fails the restore before anything is written there
    (report.exception a HookError), a failing after hook makes an ok restore
    "partial" (report.exception a PartialFailure), and on_failure runs on this
    machine for every restore that does not end ok."""
    drop = (target.key_passphrase_env,) if target.key_passphrase_env else ()
    runner = HookRunner(manifest.host, hooks or HooksConfig(), "restore", drop_env=drop)
    where = f"{target.user}@{target.address}:{target.port}"
    try:
        report = _restore(
            plan,
            manifest,
            target,
            storage=storage,
            connect=connect,
            identities=identities,
            force=force,
            progress=progress,
            hooks=runner,
        )
    except (Exception, KeyboardInterrupt) as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt | Interrupted) else "failed"
        runner.on_failure(status, str(e) or type(e).__name__, snapshot=manifest.id, target=where)
        raise
    if report.status != "ok":
        status = "partial" if report.status == "partial" else "failed"
        error = report.error or f"restore {report.status}"
        runner.on_failure(status, error, snapshot=manifest.id, target=where)
    return report


def _restore(
    plan: Plan,
    manifest: Manifest,
    target: HostConfig,
    *,
    storage: Storage,
    connect: Connect,
    identities: Sequence[Identity],
    force: bool,
    progress: Progress | None,
    hooks: HookRunner,
) -> RestoreReport:
    """The body of run_restore: before hooks, the plan, after hooks."""
    started = utcnow()
    report = RestoreReport(
        snapshot=manifest.id,
        host=manifest.host,
        target=f"{target.user}@{target.address}:{target.port}",
        playbook=plan.playbook,
        started=iso(started),
        warnings=list(plan.warnings),
    )
    report.snapshot_age_seconds = (started - snapshot_time(manifest.id)).total_seconds()
    for p in plan.params_of(PitrParams):
        until = datetime.fromisoformat(p.target_time or p.wal_until)
        report.recovered_age_seconds = (started - until).total_seconds()
    t0 = time.monotonic()
    progress = progress or Progress(enabled=False)
    t = connect(target)
    hooks_passed = False  # every before_restore hook ran ok: the after hooks will run
    try:
        try:
            hooks.before(t)
        except HookError as e:
            report.status = "failed"
            report.error = str(e)
            report.exception = e
            return report
        hooks_passed = True
        ctx = StepContext(t, storage, identities, manifest.id, progress, report.verified)
        ctx.expect, notes = plain_checks(storage, manifest, identities)
        report.warnings.extend(notes)
        run = Run(plan, target.address, force=force)
        progress.start()
        try:
            failure = run_plan(
                run, ctx, lambda: connect(target), report.steps, lambda: iso(utcnow())
            )
        finally:
            progress.stop()
        report.dns = run.dns
        if failure is not None:
            report.status = "failed"
            report.error = f"step {failure.step.id} failed: {failure.result.detail}"
            report.exception = failure.error
            return report
        report.status = "ok"
        report.rto_seconds = time.monotonic() - t0
        return report
    finally:
        try:
            if hooks_passed and hooks.has_after:
                errors = hooks.after_on(lambda: connect(target))
                if errors:
                    report.hook_errors = errors
                    if report.status == "ok":  # the restore itself is done: RTO stays
                        report.status = "partial"
                        first = "; ".join(e.splitlines()[0] for e in errors)
                        report.error = f"after_restore hooks failed: {first}"
                        report.exception = PartialFailure(report.error)
        finally:
            report.finished = iso(utcnow())
            if report.status not in ("ok", "partial"):
                report.rto_seconds = time.monotonic() - t0
            t.close()
