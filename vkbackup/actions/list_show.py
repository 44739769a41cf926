"""`vkbackup list` and `vkbackup show`: what the storage holds, readable.

`list` needs only the public part of the manifests (no key). `show` prints
the public part always, and the private part (per-source metadata, host
facts) when an identity is given; without one it says the private part is
sealed.

Every name in these lines came from a host, a config or a manifest someone
else may have written, so the text forms pass each line through
`vkbackup.textsafe.printable`: a control character in a container name or a
path is shown as an escape, never sent to the terminal. The --json forms stay
exact (JSON escapes control characters itself).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from vkbackup import catalog, layout
from vkbackup.crypto import Identity
from vkbackup.errors import VkError
from vkbackup.manifest import Manifest, open_private
from vkbackup.progress import human_bytes
from vkbackup.storage.base import Storage
from vkbackup.textsafe import printable
from vkbackup.verify_records import VerifyRecord, load_record, load_records

MAX_FILES_SHOWN = 40
MAX_TABLES_SHOWN = 15


def format_age(seconds: float) -> str:
    """Given an age in seconds, return it short: "45s", "12m", "3h05m", "2d04h"."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _parse_time(text: str, fallback: datetime) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return fallback
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass(frozen=True)
class SnapshotRow:
    """One line of `list`. *error* is set, with status "unreadable", when the
    manifest cannot be read."""

    host: str
    id: str
    time: datetime  # when the snapshot started (UTC)
    status: str  # complete | partial | unreadable
    finished: str = ""
    bytes_total: int = 0
    bytes_new: int = 0
    bytes_reused: int = 0
    objects: int = 0
    sources_ok: int = 0
    sources_total: int = 0
    last_verified: VerifyRecord | None = None
    error: str | None = None

    @classmethod
    def from_manifest(cls, m: Manifest, record: VerifyRecord | None) -> SnapshotRow:
        return cls(
            host=m.host,
            id=m.id,
            time=_parse_time(m.started, layout.snapshot_time(m.id)),
            status=m.status,
            finished=m.finished,
            bytes_total=m.bytes_total,
            bytes_new=m.bytes_new,
            bytes_reused=m.bytes_reused,
            objects=len(m.objects),
            sources_ok=sum(1 for s in m.sources if s.status == "ok"),
            sources_total=len(m.sources),
            last_verified=record,
        )

    def to_json(self, now: datetime) -> dict[str, Any]:
        v = self.last_verified
        return {
            "host": self.host,
            "id": self.id,
            "time": self.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "age_seconds": int((now - self.time).total_seconds()),
            "status": self.status,
            "bytes": self.bytes_total,
            "bytes_new": self.bytes_new,
            "bytes_reused": self.bytes_reused,
            "objects": self.objects,
            "sources_ok": self.sources_ok,
            "sources_total": self.sources_total,
            "last_verified": None
            if v is None
            else {"time": v.time, "ok": v.ok, "mode": v.mode, "bad": v.bad_count},
            "error": self.error,
        }


def list_rows(storage: Storage, host: str | None = None) -> list[SnapshotRow]:
    """Given storage (and a host), return one row per snapshot, oldest first.
    A manifest that cannot be read gives a row with status "unreadable"."""
    records = load_records(storage, host)
    rows: list[SnapshotRow] = []
    for h, sid in catalog.list_snapshots(storage, host):
        try:
            m = catalog.load_manifest(storage, h, sid)
        except VkError as e:
            rows.append(
                SnapshotRow(
                    host=h,
                    id=sid,
                    time=layout.snapshot_time(sid),
                    status="unreadable",
                    last_verified=records.get((h, sid)),
                    error=str(e),
                )
            )
            continue
        rows.append(SnapshotRow.from_manifest(m, records.get((h, sid))))
    return rows


def format_list(rows: Sequence[SnapshotRow], now: datetime) -> list[str]:
    """Given rows, return the `list` table (a header, one line per snapshot)."""
    if not rows:
        return ["no snapshots"]
    head = (
        f"{'ID':22} {'HOST':12} {'TIME (UTC)':17} {'AGE':>6} {'SIZE':>10} {'NEW':>10} "
        f"{'REUSED':>10} {'SOURCES':>7} {'STATUS':10} LAST VERIFIED"
    )
    out = [head]
    for r in rows:
        verified = r.last_verified.describe() if r.last_verified else "never"
        srcs = f"{r.sources_ok}/{r.sources_total}"
        out.append(
            f"{r.id:22} {r.host:12} {r.time.astimezone(UTC):%Y-%m-%d %H:%M} "
            f"{format_age((now - r.time).total_seconds()):>6} {human_bytes(r.bytes_total):>10} "
            f"{human_bytes(r.bytes_new):>10} {human_bytes(r.bytes_reused):>10} {srcs:>7} "
            f"{r.status:10} {verified}"
        )
        if r.error:
            out.append(f"    {r.error}")
    return [printable(line) for line in out]


# -- show -------------------------------------------------------------------------


@dataclass
class ShowResult:
    manifest: Manifest
    last_verified: VerifyRecord | None
    private: dict[str, Any] | None  # decrypted private part, None if sealed
    sealed: str | None  # why the private part is not shown

    def to_json(self, now: datetime) -> dict[str, Any]:
        m = self.manifest
        v = self.last_verified
        started = _parse_time(m.started, layout.snapshot_time(m.id))
        return {
            "id": m.id,
            "host": m.host,
            "started": m.started,
            "finished": m.finished,
            "age_seconds": int((now - started).total_seconds()),
            "tool_version": m.tool_version,
            "status": m.status,
            "manifest": layout.manifest_key(m.host, m.id),
            "bytes": m.bytes_total,
            "bytes_new": m.bytes_new,
            "bytes_reused": m.bytes_reused,
            "reused_from": sorted({o.uploaded_in for o in m.objects if m.origin(o) != m.id}),
            "sources": [asdict(s) for s in m.sources],
            "objects": [asdict(o) for o in m.objects],
            "last_verified": None
            if v is None
            else {"time": v.time, "ok": v.ok, "mode": v.mode, "bad": v.bad_count},
            "private": self.private,
            "private_summary": summarize_private(self.private) if self.private else None,
            "sealed": self.sealed,
        }


def show_snapshot(
    storage: Storage,
    ref: str,
    *,
    host: str | None = None,
    load_identities: Callable[[], Sequence[Identity]] | None = None,
    sealed_reason: str = "no identity configured (encryption.identity)",
) -> ShowResult:
    """Given a snapshot reference (an id, a unique id prefix or "latest"), return
    its manifest, last verify record and, if *load_identities* is given, its
    decrypted private part. *load_identities* is called only once the snapshot
    is found, so a passphrase prompt comes after a typo in the id is reported;
    without it the private part stays sealed (*sealed_reason* says why). Raise
    the catalog's errors for an unknown or ambiguous ref, CryptoError if the
    identity cannot open the private part."""
    m = catalog.resolve(storage, ref, host)
    record = load_record(storage, m.host, m.id)
    if load_identities is None:
        return ShowResult(m, record, None, f"sealed: {sealed_reason}")
    ids = load_identities()
    private = open_private(m, ids)
    return ShowResult(m, record, private, None)


def _facts_summary(facts: dict[str, Any]) -> dict[str, Any]:
    osr = facts.get("os_release") or {}
    containers = [c for c in facts.get("containers") or [] if isinstance(c, dict)]
    return {
        "os": osr.get("PRETTY_NAME") or osr.get("NAME"),
        "docker": facts.get("docker_version"),
        "compose": facts.get("compose"),
        "containers": len(containers),
        "running": sum(1 for c in containers if c.get("running")),
        "volumes": len(facts.get("volumes") or []),
        "compose_projects": sorted((facts.get("compose_projects") or {}).keys()),
    }


def _source_summary(doc: dict[str, Any]) -> dict[str, Any]:
    meta = doc.get("meta") or {}
    typ = doc.get("type")
    out: dict[str, Any] = {"type": typ}
    if doc.get("error"):
        out["error"] = doc["error"]
    if doc.get("downtime_seconds") is not None:
        out["downtime_seconds"] = doc["downtime_seconds"]
        out["downtime"] = dict(doc.get("downtime") or {})  # per container; older: absent
    if typ == "files":
        files = [f for f in meta.get("files") or [] if isinstance(f, dict)]
        out["files"] = [str(f.get("path")) for f in files]
        out["file_bytes"] = sum(int(f.get("size") or 0) for f in files)
        out["secret"] = bool(meta.get("secret"))
    elif typ == "postgres":
        server = meta.get("server") or {}
        counts = {str(k): int(v) for k, v in (meta.get("row_counts") or {}).items()}
        out.update(
            database=meta.get("database"),
            container=meta.get("container"),
            server_version=server.get("version"),
            database_bytes=int(server.get("size") or 0),
            extensions=list(server.get("extensions") or []),
            tables=len(counts),
            rows=sum(counts.values()),
            row_counts=counts,
        )
    elif typ == "docker-volume":
        out.update(
            volume=meta.get("volume"),
            volume_bytes=meta.get("size"),
            used_by=list(meta.get("used_by") or []),
            stopped=list(meta.get("stopped") or []),
            quiesce=str(meta.get("quiesce") or "stop"),  # snapshots before it: stop
        )
    elif typ == "docker-image":
        out["images"] = [
            {"ref": i.get("ref"), "id": i.get("id")} if isinstance(i, dict) else {"ref": i}
            for i in meta.get("images") or []
        ]
    return out


def summarize_private(private: dict[str, Any]) -> dict[str, Any]:
    """Given a decrypted private part, return its readable summary: the host's
    address, a facts summary, and per source what was saved."""
    sources = private.get("sources") or {}
    return {
        "host": private.get("host") or {},
        "facts": _facts_summary(private.get("facts") or {}),
        "sources": {
            str(name): _source_summary(doc)
            for name, doc in sorted(sources.items())
            if isinstance(doc, dict)
        },
    }


def _private_lines(summary: dict[str, Any]) -> list[str]:
    """The private summary as text: sections at 4 spaces, details at 6, lists at 8."""
    out: list[str] = []
    h = summary.get("host") or {}
    f = summary["facts"]
    if h:
        out.append(f"    address: {h.get('user')}@{h.get('address')}:{h.get('port')}")
    projects = ", ".join(f["compose_projects"]) or "none"
    out.append(
        f"    host:    {f['os'] or 'unknown OS'}, Docker {f['docker'] or '?'}, compose "
        f"{f['compose'] or 'none'}; {f['containers']} containers ({f['running']} running), "
        f"{f['volumes']} volumes; compose projects: {projects}"
    )
    for name, s in summary["sources"].items():
        out.append(f"    source {name} ({s['type']}):")
        if s.get("error"):
            out.append(f"      error: {s['error']}")
        if s.get("downtime_seconds") is not None:
            held = "paused" if s.get("quiesce") == "pause" else "stopped"
            each = ", ".join(f"{c} {v:.1f}s" for c, v in sorted(s.get("downtime", {}).items()))
            out.append(
                f"      containers {held} for {s['downtime_seconds']:.1f}s"
                + (f" ({each})" if each else "")
            )
        if s["type"] == "files":
            files = s["files"]
            secret = ", secret" if s["secret"] else ""
            out.append(f"      {len(files)} files, {human_bytes(s['file_bytes'])}{secret}")
            out.extend(f"        {p}" for p in files[:MAX_FILES_SHOWN])
            if len(files) > MAX_FILES_SHOWN:
                out.append(f"        ... and {len(files) - MAX_FILES_SHOWN} more")
        elif s["type"] == "postgres":
            out.append(
                f"      database {s['database']} in container {s['container']}, PostgreSQL "
                f"{s['server_version']}, {human_bytes(s['database_bytes'])}; "
                f"{s['tables']} tables, {s['rows']} rows"
            )
            if s["extensions"]:
                out.append(f"      extensions: {', '.join(s['extensions'])}")
            top = sorted(s["row_counts"].items(), key=lambda kv: (-kv[1], kv[0]))
            for table, n in top[:MAX_TABLES_SHOWN]:
                out.append(f"        {n:>12}  {table}")
            if len(top) > MAX_TABLES_SHOWN:
                out.append(f"        ... and {len(top) - MAX_TABLES_SHOWN} more tables")
        elif s["type"] == "docker-volume":
            size = s.get("volume_bytes")
            out.append(
                f"      volume {s['volume']}"
                + (f", {human_bytes(int(size))}" if size is not None else "")
                + f"; used by {', '.join(s['used_by']) or 'no container'}; "
                + (
                    "held nothing (quiesce = none)"
                    if s.get("quiesce") == "none"
                    else f"{'paused' if s.get('quiesce') == 'pause' else 'stopped'} "
                    f"{', '.join(s['stopped']) or 'nothing'}"
                )
            )
        elif s["type"] == "docker-image":
            for i in s["images"]:
                out.append(f"      {i.get('ref')} {str(i.get('id') or '')[:19]}")
    return out


def format_show(result: ShowResult, now: datetime) -> list[str]:
    """Given a ShowResult, return the readable manifest."""
    m = result.manifest
    started = _parse_time(m.started, layout.snapshot_time(m.id))
    finished = _parse_time(m.finished, started)
    reused_from = sorted({o.uploaded_in for o in m.objects if m.origin(o) != m.id})
    v = result.last_verified
    out = [
        f"snapshot {m.id} of host {m.host}: {m.status}",
        f"  started:  {m.started}   finished: {m.finished} "
        f"(took {format_age((finished - started).total_seconds())}, "
        f"{format_age((now - started).total_seconds())} ago)",
        f"  manifest: {layout.manifest_key(m.host, m.id)} (vkbackup {m.tool_version})",
        f"  size:     {human_bytes(m.bytes_total)} in {len(m.objects)} objects: "
        f"{human_bytes(m.bytes_new)} new, {human_bytes(m.bytes_reused)} reused"
        + (f" from {', '.join(reused_from)}" if reused_from else ""),
        f"  verified: {v.describe() if v else 'never'}",
        "  sources:",
    ]
    for s in m.sources:
        out.append(
            f"    {s.status:7} {s.type:13} {s.name:24} {human_bytes(s.bytes_new):>10} new "
            f"{human_bytes(s.bytes_reused):>10} reused {s.seconds:7.1f}s"
        )
    out.append("  objects:")
    for o in m.objects:
        origin = f"  (uploaded in {o.uploaded_in})" if m.origin(o) != m.id else ""
        chain = f" chain {o.chain}" if o.chain else ""
        out.append(
            f"    {o.key}  {o.role}{chain}  {human_bytes(o.size)}  sha256 {o.sha256[:16]}{origin}"
        )
    if result.private is None:
        out.append(f"  private part: {result.sealed or 'sealed'}")
    else:
        out.append("  private part:")
        out.extend(_private_lines(summarize_private(result.private)))
    return [printable(line) for line in out]
