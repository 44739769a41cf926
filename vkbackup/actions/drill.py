"""`vkbackup drill --to HOST`: the quarterly proof that backups restore.

Restores the latest complete snapshot onto a scratch host with the playbook,
runs every verification the restore has (objects' size + sha256 + age
authentication, database row counts, containers running and healthy, HTTP
checks), measures RTO (restore start to healthy) and RPO (age of the snapshot
used), and writes a report as Markdown, JSON and a single-file HTML page with
the timeline of steps. The result is recorded in storage under
`drills/<host>/<time>.json`, so the next drill (and `vkbackup list`) can warn
when the last successful drill is older than `drill.max_age_days`.

Interface:
    last_drill(storage, host) -> dict | None
    drill_age_warning(storage, host, max_age_days, now) -> str | None
    teardown(t, plan) -> list[str]     removes what the restore created on the scratch host
    render_markdown(doc) / render_html(doc) -> str     pure
    write_reports(doc, directory) -> list[Path]
"""

from __future__ import annotations

import html
import json
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

from vkbackup.catalog import read_small
from vkbackup.errors import ObjectNotFoundError, VkError
from vkbackup.restore_plan import Plan
from vkbackup.storage.base import Storage
from vkbackup.streams import BytesReader
from vkbackup.transport.base import Transport, pipeline_argv


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
        if isinstance(doc, dict) and (not successful or doc.get("status") == "ok"):
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


def teardown(t: Transport, plan: Plan) -> list[str]:
    """Remove from the scratch host what restoring *plan* created. Return what was removed."""
    projects = sorted({s.params["project"] for s in plan.steps if s.kind == "start"})
    containers: list[str] = []
    for s in plan.steps:
        if s.kind == "health":
            containers = list(s.params.get("containers", []))
    volumes = [s.params["volume"] for s in plan.steps if s.kind == "volume"]
    members = [m for s in plan.steps if s.kind == "files" for m in s.params.get("members", [])]
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
    if members:
        lines.append(
            f"for f in {' '.join(q(m) for m in members)}; do "
            'rm -rf -- "$f" && removed+=("file $f"); done'
        )
    lines.append(f"rm -f /var/lib/vkbackup/restore/{q(plan.snapshot_id)}.json")
    lines.append('printf "%s\\n" "${removed[@]}"')
    res = t.run(pipeline_argv("\n".join(lines)), check=False)
    if res.status != 0:
        raise VkError(f"{t.name}: teardown failed: {res.stderr.strip()[-300:]}")
    return [ln for ln in res.stdout.decode().splitlines() if ln]


def render_markdown(doc: dict[str, Any]) -> str:
    r = doc["restore"]
    out = [
        f"# vkbackup restore drill: {doc['host']} -> {doc['target']}",
        "",
        f"- **Result:** {'PASSED' if doc['status'] == 'ok' else 'FAILED'}",
        f"- **When:** {doc['started']} to {doc['finished']}",
        f"- **Snapshot:** `{r['snapshot']}` (playbook: {r['playbook']})",
        f"- **RTO** (restore start to healthy): **{r['rto_seconds']:.1f} s**",
        f"- **RPO** (age of the snapshot used): **{doc['rpo_seconds'] / 3600:.2f} h**",
    ]
    if doc.get("error"):
        out.append(f"- **Failure:** {doc['error']}")
    out += [
        "",
        "## Timeline",
        "",
        "| # | step | status | seconds | detail |",
        "|---|---|---|---|---|",
    ]
    for i, s in enumerate(r["steps"], 1):
        detail = str(s["detail"]).replace("|", "\\|")[:120]
        out.append(f"| {i} | `{s['id']}` | {s['status']} | {s['seconds']:.1f} | {detail} |")
    out += ["", "## Verified", ""] + [f"- {v}" for v in r["verified"]]
    if r["dns"]:
        out += ["", "## DNS records to move on incident day", ""] + [f"- `{d}`" for d in r["dns"]]
    if doc.get("warnings"):
        out += ["", "## Warnings", ""] + [f"- {w}" for w in doc["warnings"]]
    if doc.get("teardown"):
        out += ["", f"Teardown removed {len(doc['teardown'])} items from the scratch host."]
    return "\n".join(out) + "\n"


def render_html(doc: dict[str, Any]) -> str:
    r = doc["restore"]
    total = max(sum(float(s["seconds"]) for s in r["steps"]), 0.001)
    e = html.escape
    rows = []
    offset = 0.0
    for s in r["steps"]:
        secs = float(s["seconds"])
        left = 100 * offset / total
        width = max(100 * secs / total, 0.3)
        color = {"done": "#2e7d32", "already-done": "#9e9e9e", "failed": "#c62828"}.get(
            s["status"], "#1565c0"
        )
        rows.append(
            f"<tr><td><code>{e(s['id'])}</code></td><td>{e(s['status'])}</td>"
            f"<td class=n>{secs:.1f}</td><td class=bar><div style='margin-left:{left:.2f}%;"
            f"width:{width:.2f}%;background:{color}'></div></td><td>{e(str(s['detail'])[:100])}</td></tr>"
        )
        offset += secs
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
<li><b>RPO</b> {doc["rpo_seconds"] / 3600:.2f} h (age of the snapshot used)</li>
<li>{e(doc["started"])} &ndash; {e(doc["finished"])}</li></ul>
<h2>Timeline</h2>
<table><tr><th>step</th><th>status</th><th>s</th><th>timeline</th><th>detail</th></tr>
{"".join(rows)}</table>
<h2>Verified</h2><ul>{"".join(f"<li>{e(v)}</li>" for v in r["verified"])}</ul>
<h2>DNS</h2><ul>{"".join(f"<li><code>{e(d)}</code></li>" for d in r["dns"])}</ul>
</body></html>
"""


def write_reports(doc: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"drill-{doc['host']}-{doc['started'].replace(':', '')}"
    paths = [directory / f"{stem}.md", directory / f"{stem}.json", directory / f"{stem}.html"]
    paths[0].write_text(render_markdown(doc))
    paths[1].write_text(json.dumps(doc, indent=2))
    paths[2].write_text(render_html(doc))
    return paths
