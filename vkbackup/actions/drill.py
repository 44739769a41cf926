"""`vkbackup drill --to HOST`: the quarterly proof that backups restore.

Restores the latest complete snapshot onto a scratch host with the playbook,
runs every verification the restore has (objects' size + sha256 + age
authentication, database row counts, containers running and healthy, HTTP
checks), measures RTO (restore start to healthy) and RPO (age of the snapshot
used; with --to-time, point-in-time recovery, the age of the data the
database was recovered to: the newest WAL replayed), and writes a report as
Markdown, JSON and a single-file HTML page with the timeline of steps. The
result is recorded in storage under `drills/<host>/<time>.json`, so the next
drill (and `vkbackup list`) can warn when the last successful drill is older
than `drill.max_age_days`.

The reports also show the RTO and RPO of the host's earlier drills on record
(`vkbackup.actions.drill_history`): a table in Markdown, inline SVG bar charts
in the HTML, so a recovery that got slower shows at a glance.

A drill that fails is still recorded and reported: the failed drill is the
one worth reading. Teardown runs only after a drill that passed, so a failed
one leaves the scratch host as it stopped, for inspection.

Teardown removes files with `rm -rf`, so no path recorded in the manifest
(which a hostile bucket can forge) or in the target's restore state steers it
on its own. A path is removed only when all of these hold (`files_to_remove`):
its files step ran in THIS drill ("done", not resumed), it did not exist on
the target before the restore (probed before it starts), it is covered by the
paths of the files source of the same name in the CONFIG (not the patterns
the manifest recorded), and it is a plain absolute path at least two levels
deep: not `/`, empty, relative, with `.`/`..`/empty components, a trailing
slash or any control character (a newline would split the list). On the
target each path is read from stdin, never spliced into the command, and is
removed only if its parent directory resolves to itself (no symlink on the
way), with `rm -rf --one-file-system --`. Every path kept is named in the
drill's warnings.
"""

from __future__ import annotations

import html
import json
import posixpath
import shlex
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vkbackup import layout
from vkbackup.actions.drill_history import (
    EarlierDrill,
    drill_history,
    history_html,
    history_markdown,
)
from vkbackup.catalog import read_small, warn_future_once
from vkbackup.common import iso, parse_target, utcnow
from vkbackup.config import Config
from vkbackup.config.model import HostConfig
from vkbackup.crypto import Identity
from vkbackup.errors import IntegrityError, ObjectNotFoundError, RestoreError, VkError
from vkbackup.logs import get_logger
from vkbackup.pathglob import PathPatterns
from vkbackup.progress import Progress
from vkbackup.restore import target as target_sh
from vkbackup.restore.plan import Plan
from vkbackup.restore.playbook import Playbook
from vkbackup.restore.session import RestoreReport, build_plan, run_restore
from vkbackup.restore.steps import FilesParams, HealthParams, StartParams, VolumeParams
from vkbackup.storage.base import Storage
from vkbackup.streams import BytesReader
from vkbackup.textsafe import printable
from vkbackup.transport.base import Transport, pipeline_argv

if TYPE_CHECKING:
    from vkbackup.pitr.recover import Target

log = get_logger("drill")


@dataclass
class DrillResult:
    """One drill: the document recorded in storage and written as reports."""

    doc: dict[str, Any]
    report: RestoreReport
    reports: list[Path] = field(default_factory=list)

    @property
    def host(self) -> str:
        return str(self.doc["host"])

    @property
    def removed(self) -> list[str]:
        return list(self.doc["teardown"])

    def to_json(self) -> dict[str, Any]:
        return {**self.doc, "reports": [str(p) for p in self.reports]}

    def failure(self) -> VkError | None:
        """The error the drill ends with (None if it passed)."""
        if self.report.exception is not None:
            return self.report.exception
        if self.report.status != "ok":
            return RestoreError(self.report.error or "drill failed")
        return None


def rpo_basis(doc: Mapping[str, Any]) -> str:
    """What a drill's RPO measures: the snapshot's age, or with point-in-time
    recovery the age of the data the database was recovered to."""
    restore = doc.get("restore") or {}
    if isinstance(restore, dict) and restore.get("recovered_age_seconds") is not None:
        return "age of the database's recovered data: point-in-time recovery"
    return "age of the snapshot used"


def run_drill(
    cfg: Config,
    host: str,
    to: str,
    *,
    storage: Storage,
    connect: Callable[[HostConfig], Transport],
    identities: Callable[[], Sequence[Identity]],
    playbook: Playbook,
    report_dir: Path,
    teardown_after: bool = False,
    progress: Progress | None = None,
    pitr: Target | None = None,
) -> DrillResult:
    """Given *host*'s name and a scratch target (configured host or
    user@addr[:port]), restore the host's latest snapshot there, record the
    drill in storage and write its reports into *report_dir*. Return the
    result; a failed restore is a result too (see DrillResult.failure).

    *identities* is called once the age of the last drill has been checked,
    so its warning comes before any passphrase prompt. With *teardown_after*,
    a drill that passed removes what it restored. With *pitr*, the PITR
    database is recovered to that target (`vkbackup.pitr.recover`).
    """
    started = utcnow()
    warning = drill_age_warning(storage, host, cfg.drill.max_age_days, started)
    if warning:
        log.warning("%s", warning)
    ids = identities()
    manifest, plan = build_plan(
        storage, "latest", ids, playbook, host, pitr=pitr, skew=cfg.pitr.skew
    )
    target = parse_target(cfg, to)
    configured = configured_files(cfg, host)
    existed: set[str] = set()
    if teardown_after:  # what is there before the restore is never the drill's to remove
        candidates, _ = files_to_remove(plan, None, configured)
        if candidates:
            t = connect(target)
            try:
                existed = existing_paths(t, candidates)
            finally:
                t.close()
    report = run_restore(
        plan, manifest, target, storage=storage, connect=connect, identities=ids,
        progress=progress,
    )  # fmt: skip
    removed: list[str] = []
    kept: list[str] = []
    if teardown_after and report.status == "ok":
        done = {r.id for r in report.steps if r.status == "done"}
        files, kept = files_to_remove(plan, done, configured, existed)
        t = connect(target)
        try:
            removed = teardown(t, plan, files)
        finally:
            t.close()
        kept += [ln.removeprefix("kept ") for ln in removed if ln.startswith("kept ")]
        removed = [ln for ln in removed if not ln.startswith("kept ")]
        if len(kept) > 10:
            kept[10:] = [f"{len(kept) - 10} more recorded paths"]
        for k in kept:
            log.warning("teardown left %s", k)
    warnings = [w for w in [warning, *report.warnings] if w]
    warnings += [f"teardown left {k}" for k in kept]
    doc = {
        "host": host,
        "target": report.target,
        "started": iso(started),
        "finished": iso(utcnow()),
        "status": report.status,
        "error": report.error,
        "rpo_seconds": report.rpo_seconds,
        "rto_seconds": report.rto_seconds,
        "restore": report.to_json(),
        "warnings": warnings,
        "teardown": removed,
    }
    earlier = drill_history(storage, host)  # read before this drill is recorded
    try:
        record(storage, doc)
    except VkError as e:  # e.g. no signing key on this machine: the reports still say it all
        log.warning("the drill's record could not be stored: %s", e)
        warnings.append(f"not recorded in storage: {e}")
    paths = write_reports(doc, report_dir, earlier)
    return DrillResult(doc=doc, report=report, reports=paths)


def drill_key(host: str, when: str) -> str:
    return f"drills/{host}/{when}.json"


def record(storage: Storage, doc: dict[str, Any]) -> str:
    key = drill_key(doc["host"], doc["started"].replace(":", "").replace("-", ""))
    storage.put(key, BytesReader(json.dumps(doc, indent=1).encode()))
    return key


def last_drill(storage: Storage, host: str, *, successful: bool = True) -> dict[str, Any] | None:
    keys = sorted(i.key for i in storage.list(f"drills/{host}/") if i.key.endswith(".json"))
    for key in reversed(keys):
        try:
            doc = json.loads(read_small(storage, key, 4 * 1024 * 1024))
        except (ObjectNotFoundError, ValueError):
            continue
        except IntegrityError as e:  # unsigned or badly signed with [signing]: no drill
            log.warning("%s: ignored", e)
            continue
        if not isinstance(doc, dict) or doc.get("host") != host:
            continue
        try:
            when = datetime.fromisoformat(str(doc.get("started")).replace("Z", "+00:00"))
        except ValueError:
            continue
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        if layout.is_future(when):  # would silence the drill-age warning for years
            warn_future_once(layout.future_dated(key, when))
            continue
        if not successful or doc.get("status") == "ok":
            return doc
    return None


def drill_age_warning(storage: Storage, host: str, max_age_days: int, now: datetime) -> str | None:
    last = last_drill(storage, host)
    if last is None:
        return f"host {host}: no successful restore drill on record"
    when = datetime.fromisoformat(str(last["started"]).replace("Z", "+00:00"))
    age = (now - when).days
    if age > max_age_days:
        return (
            f"host {host}: the last successful drill was {age} days ago "
            f"({last['started']}); drill.max_age_days = {max_age_days}"
        )
    return None


def configured_files(cfg: Config, host: str) -> dict[str, tuple[str, ...]]:
    """The paths (globs) of each `files` source the config gives *host*: name -> paths."""
    h = cfg.hosts.get(host)
    return {s.name: s.paths for s in (h.sources if h else ()) if s.type == "files"}


def unsafe_path(path: str) -> str | None:
    """Given a path to `rm -rf`, return why it must not be, or None when it is a
    plain absolute path at least two levels deep (see the module docstring)."""
    if not path:
        return "empty"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "a control character"
    try:
        path.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        return "not a file name (a lone surrogate)"
    if not path.startswith("/"):
        return "not absolute"
    comps = path.split("/")[1:]
    if ".." in comps or "." in comps or "" in comps:
        return "'.', '..' or an empty component"
    if posixpath.normpath(path) != path:
        return "not a normal path"
    if len(comps) < 2:
        return "a top-level directory"
    return None


def files_to_remove(
    plan: Plan,
    done: Collection[str] | None,
    configured: Mapping[str, Sequence[str]],
    existed: Collection[str] = (),
) -> tuple[list[str], list[str]]:
    """Given the plan, the ids of the steps this drill ran (None: every step), the
    configured paths of each files source (`configured_files`) and the paths that
    existed on the target before the restore, return the files teardown may
    remove, and the recorded paths it keeps, each as "path (why)"."""
    remove: list[str] = []
    kept: list[str] = []
    for step in plan.steps:
        p = step.params
        if not isinstance(p, FilesParams) or (done is not None and step.id not in done):
            continue
        name = step.source or ""
        patterns = PathPatterns(configured.get(name, ()))
        for m in p.members:
            why = unsafe_path(m)
            if why is None and not patterns.covers(m):
                why = f"outside the configured paths of files source {name!r}"
            if why is None and m in existed:
                why = "it existed before the drill"
            if why is not None:
                kept.append(f"{printable(m)} ({why})")
            elif m not in remove:
                remove.append(m)
    return remove, kept


#: bash: print each path read from stdin (one a line) that exists on the target
EXISTING_PATHS = 'while IFS= read -r f; do if [ -e "$f" ] || [ -L "$f" ]; then echo "$f"; fi; done'

#: bash: remove each path read from stdin (never spliced into this text) whose
#: parent directory resolves to itself, i.e. no symlink on the way; one line of
#: output per path: "file PATH" removed, "kept PATH (why)" not
REMOVE_PATHS = r"""
while IFS= read -r f; do
  case "$f" in /?*/?*) ;; *) echo "kept $f (not below a top-level directory)"; continue;; esac
  [ -e "$f" ] || [ -L "$f" ] || continue
  d=${f%/*}
  if [ "$(realpath -e -- "$d" 2>/dev/null)" != "$d" ]; then
    echo "kept $f (a parent directory is a symlink)"; continue
  fi
  if rm -rf --one-file-system -- "$f"; then echo "file $f"; else echo "kept $f (rm failed)"; fi
done
"""


def _lines_in(paths: Sequence[str]) -> bytes:
    """The paths as stdin for the scripts above, after checking each again (a
    newline in one would split it in two)."""
    bad = [p for p in paths if unsafe_path(p) is not None]
    if bad:
        raise VkError(f"teardown: refusing the path {printable(bad[0])!r}: {unsafe_path(bad[0])}")
    return "".join(p + "\n" for p in paths).encode("utf-8", errors="surrogateescape")


def existing_paths(t: Transport, paths: Sequence[str]) -> set[str]:
    """Given checked paths (`files_to_remove`), return those that exist on *t*."""
    res = t.run(pipeline_argv(EXISTING_PATHS), input=_lines_in(paths))
    return set(res.stdout.decode("utf-8", errors="surrogateescape").splitlines())


def teardown(t: Transport, plan: Plan, files: Sequence[str] = ()) -> list[str]:
    """Remove from the scratch host what restoring *plan* created: its containers,
    compose projects' containers, volumes and networks, unused images, the resume
    state, and *files*: paths `files_to_remove` returned, never the plan's own
    list. Return what was removed, one "kind name" each ("kept PATH (why)" for a
    file the target-side check kept)."""
    projects = sorted({s.project for s in plan.params_of(StartParams)})
    containers = [c for h in plan.params_of(HealthParams) for c in h.containers]
    volumes = [v.volume for v in plan.params_of(VolumeParams)]
    q = shlex.quote
    lines = [
        "removed=()",
        f"for c in {' '.join(q(c) for c in containers)}; do "
        'docker rm -f "$c" >/dev/null 2>&1 && removed+=("container $c"); done',
    ]
    for p in projects:
        label = f"label=com.docker.compose.project={q(p)}"
        lines.append(
            f"for c in $(docker ps -aq --filter {label}); do "
            'docker rm -f "$c" >/dev/null; removed+=("container $c"); done'
        )
        lines.append(
            f"for v in $(docker volume ls -q --filter {label}); do "
            'docker volume rm "$v" >/dev/null && removed+=("volume $v"); done'
        )
        lines.append(
            f"for n in $(docker network ls -q --filter {label}); do "
            'docker network rm "$n" >/dev/null && removed+=("network $n"); done'
        )
    if volumes:
        lines.append(
            f"for v in {' '.join(q(v) for v in volumes)}; do "
            'docker volume rm "$v" >/dev/null 2>&1 && removed+=("volume $v"); done'
        )
    lines.append("docker image prune -af >/dev/null 2>&1 && removed+=('unused images') || true")
    if layout.ID_RE.match(plan.snapshot_id):
        lines.append(f"rm -f -- {q(target_sh.state_path(plan.snapshot_id))}")
    lines.append('printf "%s\\n" "${removed[@]}"')
    res = t.run(pipeline_argv("\n".join(lines)), check=False)
    if res.status != 0:
        raise VkError(f"{t.name}: teardown failed: {res.stderr.strip()[-300:]}")
    return [ln for ln in res.stdout.decode().splitlines() if ln] + remove_files(t, files)


def remove_files(t: Transport, files: Sequence[str]) -> list[str]:
    """Given paths `files_to_remove` returned, remove them on *t* (REMOVE_PATHS).
    Return "file PATH" for each removed, "kept PATH (why)" for each kept."""
    if not files:
        return []
    res = t.run(pipeline_argv(REMOVE_PATHS), input=_lines_in(files), check=False)
    if res.status != 0:
        raise VkError(f"{t.name}: teardown failed: {res.stderr.strip()[-300:]}")
    return [ln for ln in res.stdout.decode("utf-8", errors="surrogateescape").splitlines() if ln]


def render_markdown(doc: dict[str, Any], earlier: Sequence[EarlierDrill] = ()) -> str:
    r = doc["restore"]
    out = [
        f"# vkbackup restore drill: {doc['host']} -> {doc['target']}",
        "",
        f"- **Result:** {'PASSED' if doc['status'] == 'ok' else 'FAILED'}",
        f"- **When:** {doc['started']} to {doc['finished']}",
        f"- **Snapshot:** `{r['snapshot']}` (playbook: {r['playbook']})",
        f"- **RTO** (restore start to healthy): **{r['rto_seconds']:.1f} s**",
        f"- **RPO** ({rpo_basis(doc)}): **{doc['rpo_seconds'] / 3600:.2f} h**",
    ]
    if doc.get("error"):
        out.append(f"- **Failure:** {doc['error']}")
    out += [
        "",
        "## Timeline",
        "",
        "| # | step | status | started at s | seconds | detail |",
        "|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(r["steps"], 1):
        detail = str(s["detail"]).replace("|", "\\|")[:120]
        at = f"{float(s['started']):.1f}" if "started" in s else ""
        out.append(f"| {i} | `{s['id']}` | {s['status']} | {at} | {s['seconds']:.1f} | {detail} |")
    out += ["", "## Verified", ""] + [f"- {v}" for v in r["verified"]]
    if r["dns"]:
        out += ["", "## DNS records to move on incident day", ""] + [f"- `{d}`" for d in r["dns"]]
    if doc.get("warnings"):
        out += ["", "## Warnings", ""] + [f"- {w}" for w in doc["warnings"]]
    if doc.get("teardown"):
        out += ["", f"Teardown removed {len(doc['teardown'])} items from the scratch host."]
    out += ["", *history_markdown(doc, earlier)]
    return "\n".join(out) + "\n"


def step_spans(steps: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    """(start, seconds) of each step of a report: its recorded start (steps run side
    by side), or in a report of an older version, which recorded none because its
    steps ran one after the other, the end of the step before it."""
    spans: list[tuple[float, float]] = []
    offset = 0.0
    for s in steps:
        start, secs = float(s.get("started", offset)), float(s["seconds"])
        spans.append((start, secs))
        offset = start + secs
    return spans


def render_html(doc: dict[str, Any], earlier: Sequence[EarlierDrill] = ()) -> str:
    r = doc["restore"]
    spans = step_spans(r["steps"])
    total = max([a + b for a, b in spans] + [0.001])
    e = html.escape
    rows = []
    for s, (start, secs) in zip(r["steps"], spans, strict=True):
        left = 100 * start / total
        width = max(100 * secs / total, 0.3)
        color = {"done": "#2e7d32", "already-done": "#9e9e9e", "failed": "#c62828"}.get(
            s["status"], "#1565c0"
        )
        rows.append(
            f"<tr><td><code>{e(s['id'])}</code></td><td>{e(s['status'])}</td>"
            f"<td class=n>{secs:.1f}</td><td class=bar><div style='margin-left:{left:.2f}%;"
            f"width:{width:.2f}%;background:{color}'></div></td><td>{e(str(s['detail'])[:100])}</td></tr>"
        )
    verdict = "PASSED" if doc["status"] == "ok" else "FAILED"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>vkbackup drill {e(doc["host"])} {e(doc["started"])}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;width:100%}} td,th{{border-bottom:1px solid #ddd;padding:4px 6px;
text-align:left;font-size:14px}} td.n{{text-align:right}} td.bar{{width:40%}}
td.bar div{{height:12px;border-radius:2px}} .ok{{color:#2e7d32}} .bad{{color:#c62828}}
</style></head><body>
<h1>Restore drill: {e(doc["host"])} &rarr; {e(doc["target"])}</h1>
<p class="{"ok" if doc["status"] == "ok" else "bad"}"><b>{verdict}</b>
{("&mdash; " + e(str(doc.get("error")))) if doc.get("error") else ""}</p>
<ul><li>Snapshot <code>{e(r["snapshot"])}</code>, playbook {e(r["playbook"])}</li>
<li><b>RTO</b> {r["rto_seconds"]:.1f} s (restore start to healthy)</li>
<li><b>RPO</b> {doc["rpo_seconds"] / 3600:.2f} h ({html.escape(rpo_basis(doc))})</li>
<li>{e(doc["started"])} &ndash; {e(doc["finished"])}</li></ul>
<h2>Timeline</h2>
<table><tr><th>step</th><th>status</th><th>s</th><th>timeline</th><th>detail</th></tr>
{"".join(rows)}</table>
<h2>Verified</h2><ul>{"".join(f"<li>{e(v)}</li>" for v in r["verified"])}</ul>
<h2>DNS</h2><ul>{"".join(f"<li><code>{e(d)}</code></li>" for d in r["dns"])}</ul>
{history_html(doc, earlier)}
</body></html>
"""


def write_reports(
    doc: dict[str, Any], directory: Path, earlier: Sequence[EarlierDrill] = ()
) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"drill-{doc['host']}-{doc['started'].replace(':', '')}"
    paths = [directory / f"{stem}.md", directory / f"{stem}.json", directory / f"{stem}.html"]
    paths[0].write_text(render_markdown(doc, earlier))
    paths[1].write_text(json.dumps(doc, indent=2))
    paths[2].write_text(render_html(doc, earlier))
    return paths
