"""What verify, prune, drill and copy tell monitoring: each host's outcome of a job, as
a `monitoring.JobOutcome` (ok or not, a summary of ids, counts and sizes, and
why it failed), built from the action's result for `AppContext.monitored_job`.
No secrets: no paths, no file names, only keys, ids and numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vkbackup.monitoring import JobOutcome

if TYPE_CHECKING:
    from vkbackup.actions.copy import CopyItem, CopyResult
    from vkbackup.actions.drill import DrillResult
    from vkbackup.actions.prune import PruneReport
    from vkbackup.actions.verify import SnapshotVerify

#: at most this many problems are named in a failure's reason
MAX_NAMED = 5


def _clip(items: Sequence[str]) -> str:
    more = len(items) - MAX_NAMED
    return "; ".join(items[:MAX_NAMED]) + (f"; {more} more" if more > 0 else "")


def verify_outcomes(results: Sequence[SnapshotVerify]) -> list[JobOutcome]:
    """Given verify results, return one outcome per host: ok when every snapshot
    of the host verified."""
    by_host: dict[str, list[SnapshotVerify]] = {}
    for r in results:
        by_host.setdefault(r.host, []).append(r)
    out = []
    for host, rs in sorted(by_host.items()):
        bad = [f"{r.id}: {b.problem}: {b.key}" for r in rs for b in r.bad]
        summary = {
            "status": "ok" if not bad else "bad",
            "snapshots": len(rs),
            "latest": rs[-1].id,
            "objects": sum(r.objects for r in rs),
            "bytes": sum(r.bytes for r in rs),
            "bad": len(bad),
            "mode": ",".join(sorted({r.mode for r in rs})),
        }
        reason = f"verify of {host} found {len(bad)} bad: {_clip(bad)}" if bad else None
        out.append(JobOutcome("verify", host, not bad, summary, reason))
    return out


def prune_outcomes(report: PruneReport) -> list[JobOutcome]:
    """Given a prune report, return one outcome per host it pruned or failed to:
    ok when every deletion of the host succeeded."""
    out = []
    for hp in report.hosts:
        failed = [f"{k}: {e}" for k, e in hp.failed]
        summary = {
            "status": "ok" if not failed else "failed",
            "kept": len(hp.plan.kept),
            "dropped": len(hp.plan.dropped),
            "deleted": len(hp.deleted),
            "bytes_freed": hp.bytes_freed,
            "failed": len(failed),
        }
        reason = (
            f"prune of {hp.host}: {len(failed)} deletions failed: {_clip(failed)}"
            if failed
            else None
        )
        out.append(JobOutcome("prune", hp.host, not failed, summary, reason))
    for host, err in report.errors:
        if host != "-":  # "-": uploads under no host's keys
            out.append(
                JobOutcome("prune", host, False, {"status": "failed"}, f"prune of {host}: {err}")
            )
    return out


def drill_outcome(result: DrillResult) -> list[JobOutcome]:
    """Given a drill's result, return its host's outcome: ok when the drill passed."""
    doc = result.doc
    ok = result.failure() is None
    summary = {
        "status": str(doc.get("status")),
        "snapshot": str(doc["restore"].get("snapshot")),
        "rto_seconds": round(float(doc.get("rto_seconds") or 0), 1),
        "rpo_seconds": round(float(doc.get("rpo_seconds") or 0), 1),
    }
    why = doc.get("error") or "see the report"
    reason = None if ok else f"drill of {result.host} failed: {why}"
    return [JobOutcome("drill", result.host, ok, summary, reason)]


def copy_outcomes(result: CopyResult) -> list[JobOutcome]:
    """Given a copy result, return one outcome per host: ok when every snapshot
    of the host reached every copy asked for."""
    by_host: dict[str, list[CopyItem]] = {}
    for i in result.items:
        by_host.setdefault(i.host, []).append(i)
    out = []
    for host, items in sorted(by_host.items()):
        bad = [f"{i.copy}: {i.id}: {i.error}" for i in items if i.status == "failed"]
        summary = {
            "status": "ok" if not bad else "failed",
            "copies": ",".join(sorted({i.copy for i in items})),
            "snapshots": len({i.id for i in items}),
            "objects_copied": sum(i.objects_copied for i in items),
            "objects_skipped": sum(i.objects_skipped for i in items),
            "bytes_copied": sum(i.bytes_copied for i in items),
            "failed": len(bad),
        }
        reason = f"copy of {host}: {len(bad)} failed: {_clip(bad)}" if bad else None
        out.append(JobOutcome("copy", host, not bad, summary, reason))
    return out
