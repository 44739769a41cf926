"""Derive a restore plan from a snapshot (its manifest and recorded host facts),
refined by an optional playbook. Pure: no effects.

Derived order (any Docker host, no playbook needed):
    preflight -> ensure-docker -> files -> images -> volumes
    -> per database: start its container, restore roles + dump, compare row counts
    -> start compose projects (playbook order first; then the rest, databases'
       projects first, host-network / port 80/443 proxies last)
    -> health (every container that ran at snapshot time runs, healthchecks
       healthy, playbook HTTP checks answer) -> DNS checklist

Interface:
    Step                      one unit of work, with a stable id (resume state keys on it)
    derive_plan(manifest, private, playbook) -> Plan
    Plan.steps, Plan.warnings, Plan.only(names) -> Plan
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vkbackup.manifest import Manifest, ObjectRecord
from vkbackup.playbook import Playbook, StartGroup

RESUMABLE = {"files", "image", "volume", "database", "start"}


@dataclass
class Step:
    id: str
    kind: str
    title: str
    source: str | None = None
    objects: list[ObjectRecord] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def resumable(self) -> bool:
        return self.kind in RESUMABLE


@dataclass
class Plan:
    snapshot_id: str
    host: str
    playbook: str
    steps: list[Step]
    warnings: list[str] = field(default_factory=list)

    def only(self, names: tuple[str, ...]) -> Plan:
        """Keep the steps whose id, kind or source is named (plus preflight)."""
        if not names:
            return self
        keep = [
            s
            for s in self.steps
            if s.kind == "preflight"
            or s.id in names
            or s.kind in names
            or (s.source is not None and s.source in names)
        ]
        return Plan(self.snapshot_id, self.host, self.playbook, keep, list(self.warnings))

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.steps)


def _compose_of(containers: list[dict[str, Any]], name: str) -> tuple[str, str] | None:
    for c in containers:
        if c.get("name") == name:
            labels = c.get("labels") or {}
            proj = labels.get("com.docker.compose.project")
            svc = labels.get("com.docker.compose.service")
            if proj and svc:
                return proj, svc
    return None


def _is_edge_proxy(project: dict[str, Any], containers: list[dict[str, Any]]) -> bool:
    names = set(project["services"].values())
    for c in containers:
        if c.get("name") in names:
            image = str(c.get("image") or "")
            ports = " ".join(c.get("ports") or [])
            if "caddy" in image or "traefik" in image or "nginx" in image:
                return True
            if "80/tcp" in ports.split() or "443/tcp" in ports.split():
                return True
            if "host" in (c.get("networks") or []) and "caddy" in c.get("name", ""):
                return True
    return False


def derive_plan(manifest: Manifest, private: dict[str, Any], playbook: Playbook) -> Plan:
    facts = private.get("facts") or {}
    containers: list[dict[str, Any]] = facts.get("containers") or []
    projects: dict[str, dict[str, Any]] = facts.get("compose_projects") or {}
    sources: dict[str, Any] = private.get("sources") or {}
    ok = {s.name for s in manifest.sources if s.status == "ok"}
    by_source: dict[str, list[ObjectRecord]] = {}
    for o in manifest.objects:
        by_source.setdefault(o.source, []).append(o)
    steps: list[Step] = [
        Step("preflight", "preflight", "check the target: reachable, Docker, nothing to overwrite"),
        Step("ensure-docker", "ensure-docker", "Docker Engine and compose present"),
    ]
    warnings: list[str] = []
    for s in manifest.sources:
        if s.status != "ok":
            warnings.append(f"source {s.name} ({s.type}) failed in this snapshot: not restored")

    def src_meta(name: str) -> dict[str, Any]:
        return dict((sources.get(name) or {}).get("meta") or {})

    for name, info in sources.items():
        if name in ok and info.get("type") == "files":
            meta = src_meta(name)
            steps.append(
                Step(
                    f"files:{name}",
                    "files",
                    f"put files of {name} ({len(meta.get('files', []))} paths)",
                    name,
                    by_source.get(name, []),
                    {"members": [e["path"] for e in meta.get("files", [])]},
                )
            )
    for name, info in sources.items():
        if name in ok and info.get("type") == "docker-image":
            for o in by_source.get(name, []):
                refs = (private.get("objects", {}).get(o.key) or {}).get("refs", [o.name])
                steps.append(
                    Step(f"image:{name}", "image", f"load images {', '.join(refs)}", name, [o])
                )
    for name, info in sources.items():
        if name in ok and info.get("type") == "docker-volume":
            meta = src_meta(name)
            steps.append(
                Step(
                    f"volume:{name}",
                    "volume",
                    f"create and fill volume {meta.get('volume')}",
                    name,
                    by_source.get(name, []),
                    {"volume": meta.get("volume"), "labels": meta.get("labels", "")},
                )
            )
    started: set[tuple[str, str]] = set()
    db_projects: list[str] = []
    for name, info in sources.items():
        if name in ok and info.get("type") == "postgres":
            meta = src_meta(name)
            container = meta.get("container", "")
            comp = _compose_of(containers, container)
            if comp is not None:
                steps.append(
                    Step(
                        f"start:{comp[0]}:{comp[1]}",
                        "start",
                        f"start {comp[1]} of {comp[0]} (database)",
                        params={"project": comp[0], "services": [comp[1]]},
                    )
                )
                started.add(comp)
                db_projects.append(comp[0])
            else:
                warnings.append(
                    f"database container {container} is not a compose service: "
                    "start it yourself before the database step"
                )
            server = meta.get("server") or {}
            steps.append(
                Step(
                    f"database:{name}",
                    "database",
                    f"restore database {meta.get('database')} (PostgreSQL {server.get('major')})",
                    name,
                    by_source.get(name, []),
                    {
                        "container": container,
                        "database": meta.get("database"),
                        "user": meta.get("user", "postgres"),
                        "major": server.get("major"),
                        "row_counts": meta.get("row_counts") or {},
                    },
                )
            )
    # start groups: the playbook's order first, then what it did not name
    groups: list[StartGroup] = list(playbook.start)
    named = {g.project for g in groups}
    rest = [p for p in projects if p not in named]
    rest.sort(
        key=lambda p: (
            0 if p in db_projects else (2 if _is_edge_proxy(projects[p], containers) else 1),
            p,
        )
    )
    groups += [StartGroup(p) for p in rest]
    for g in groups:
        proj = projects.get(g.project)
        if proj is None:
            warnings.append(f"playbook start group {g.project!r}: no such compose project")
            continue
        services = list(g.services) or sorted(proj["services"])
        todo = [s for s in services if (g.project, s) not in started]
        if not todo:
            continue
        started.update((g.project, s) for s in todo)
        steps.append(
            Step(
                f"start:{g.project}:{','.join(todo)}",
                "start",
                f"start {g.project}: {', '.join(todo)}",
                params={"project": g.project, "services": todo},
            )
        )
    for p, proj in projects.items():
        for s in proj["services"]:
            if (p, s) not in started:
                steps.append(
                    Step(
                        f"start:{p}:{s}",
                        "start",
                        f"start {p}: {s}",
                        params={"project": p, "services": [s]},
                    )
                )
                started.add((p, s))
    for step in steps:
        if step.kind == "start":
            proj = projects[step.params["project"]]
            step.params["working_dir"] = proj.get("working_dir")
            step.params["config_files"] = proj.get("config_files")
    expected = sorted(
        c["name"]
        for c in containers
        if c.get("running") and (c.get("labels") or {}).get("com.docker.compose.project")
    )
    unmanaged = sorted(
        c["name"]
        for c in containers
        if c.get("running") and not (c.get("labels") or {}).get("com.docker.compose.project")
    )
    for name in unmanaged:
        warnings.append(f"container {name} was not started by compose: recreate it by hand")
    steps.append(
        Step(
            "health",
            "health",
            f"health: {len(expected)} containers running, {len(playbook.health)} HTTP checks",
            params={
                "containers": expected,
                "healthchecked": sorted(
                    c["name"] for c in containers if c.get("has_healthcheck") and c.get("running")
                ),
                "http": [
                    {"name": h.name, "url": h.url, "expect_status": h.expect_status}
                    for h in playbook.health
                ],
                "timeout": playbook.health_timeout,
            },
        )
    )
    steps.append(
        Step(
            "dns",
            "dns",
            "DNS records to point at the new host",
            params={"zone": playbook.dns_zone, "records": list(playbook.dns_records)},
        )
    )
    return Plan(manifest.id, manifest.host, playbook.name, steps, warnings)
