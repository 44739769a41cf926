"""The restore plan: which steps, and what each waits for. Pure: no effects.

Each source module says which steps bring its data back (`restore_steps`);
this module decides the order, what each step waits for (`Step.after`, see
`wire`) and the start groups, from the snapshot's own record of the host
(compose projects and their containers), refined by an optional playbook. So
a snapshot of any Docker host restores without one.

The plan is a graph the runner walks several steps at a time; listed in plan
order (which is also the order ready steps start in), each with what it waits
for:
    preflight                         alone, before anything else
    host-packages (Docker's)          preflight; Docker Engine, Compose and the
                                      decompressors, after the apt sources
    host-packages (the rest)          Docker's packages
    host-users                        Docker's packages (its `docker` group)
    host-files (Docker's config)      users (daemon.json may name a group);
                                      restarts the daemon when it changed
    host-files (/etc, Caddy's data)   every package and the users (owners are
                                      mapped by name; packages create system users)
    ensure-docker                     Docker's packages and configuration
    files                             host-files (their paths may overlap /etc)
    images, volumes                   ensure-docker
    a database's container start      files, the volumes it mounts and the images
                                      holding its own image, not the others
                                      (`--no-deps`), so the dump goes in while
                                      the other volumes still stream
    its database                      that start
    compose starts                    all data: files, images, volumes, databases;
                                      one at a time in plan order (the playbook's
                                      groups, then the projects it does not name,
                                      host-network / port 80/443 proxies last):
                                      projects may share a named network
    host-services (units, Caddy)      host-files and files
    host-firewall                     everything before it
    health, then the DNS checklist    everything before it

Docker's packages come first because every container step needs them; the
rest install while the images and volumes stream in, since nothing but the
host's own units needs them. The accounts are created before those other
packages, with prod's ids where free: a package finds its system user there
and keeps it (`adduser --system` does), so files owned by it keep prod's ids.
Data goes in before any app starts, so no service ever starts on half of its
data; the database's own container starts as soon as its image is in,
because the dump is restored through its server. Caddy may restart before
the apps behind it run: it answers 502 until they do, and health waits for
the apps. The firewall goes last, once nothing else needs a new way in: it
is applied behind a rollback that only a new SSH connection cancels, and
health runs after it, so a pass means users get in through it.

Not covered: a daemon.json naming files outside /etc/docker and
/etc/containerd (TLS certificates, a seccomp profile) that only the later
host-files step lays down; Docker then fails to restart, the step fails
naming the unit, and `vkbackup restore --only host-files:NAME` followed by a
re-run gets past it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TypeVar

from vkbackup.manifest import Manifest, ObjectRecord
from vkbackup.restore.playbook import Playbook, StartGroup
from vkbackup.restore.records import ComposeProject, HostFacts, PrivatePart, SourceEntry
from vkbackup.restore.steps import (
    ComposeName,
    DatabaseParams,
    DnsParams,
    EnsureDockerParams,
    HealthParams,
    HostFilesParams,
    HostFirewallParams,
    HostPackagesParams,
    HostServicesParams,
    HttpCheckParams,
    ImageParams,
    PreflightParams,
    StartParams,
    Step,
    VolumeParams,
)
from vkbackup.sources import docker_image, docker_volume, files, host, postgres

P = TypeVar("P")

NEEDS_DOCKER = frozenset({"image", "volume", "database", "start", "health"})


@dataclass
class Plan:
    snapshot_id: str
    host: str
    playbook: str
    steps: list[Step]
    warnings: list[str] = field(default_factory=list)

    def only(self, names: tuple[str, ...]) -> Plan:
        """Keep the steps whose id, kind or source is named, plus preflight, and
        ensure-docker when a kept step needs Docker (a bare target has none)."""
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
        if any(s.kind in NEEDS_DOCKER for s in keep):
            keep = [s for s in self.steps if s in keep or s.kind == "ensure-docker"]
        return Plan(self.snapshot_id, self.host, self.playbook, keep, list(self.warnings))

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.steps)

    def params_of(self, kind: type[P]) -> list[P]:
        """The parameters of every step of one kind, in plan order."""
        return [s.params for s in self.steps if isinstance(s.params, kind)]


def _is_edge_proxy(project: ComposeProject, facts: HostFacts) -> bool:
    names = set(project.services.values())
    for c in facts.containers:
        if c.name in names:
            ports = set(c.ports)
            if "caddy" in c.image or "traefik" in c.image or "nginx" in c.image:
                return True
            if "80/tcp" in ports or "443/tcp" in ports:
                return True
            if "host" in c.networks and "caddy" in c.name:
                return True
    return False


def _source_steps(
    entry: SourceEntry, objects: list[ObjectRecord], private: PrivatePart
) -> list[Step]:
    meta = entry.meta
    if isinstance(meta, files.Meta):
        return files.restore_steps(entry.name, meta, objects)
    if isinstance(meta, docker_image.Meta):
        return docker_image.restore_steps(
            entry.name, meta, objects, lambda o: private.refs(o.key, o.name)
        )
    if isinstance(meta, docker_volume.Meta):
        return docker_volume.restore_steps(entry.name, meta, objects)
    if isinstance(meta, postgres.Meta):
        return postgres.restore_steps(entry.name, meta, objects)
    if isinstance(meta, host.Meta):
        return host.restore_steps(entry.name, meta, objects)
    return []


def _start(project: ComposeProject, services: list[str], title: str, no_deps: bool = False) -> Step:
    params = StartParams(
        project=project.name,
        services=tuple(services),
        working_dir=project.working_dir,
        config_files=project.config_files,
        no_deps=no_deps,
    )
    return Step(f"start:{project.name}:{','.join(services)}", title, params)


# the order data steps go in: files (compose files, .env) first, then images,
# then volumes; databases come after, each behind its container's start
DATA_ORDER = (files.Meta, docker_image.Meta, docker_volume.Meta)


def derive_plan(manifest: Manifest, private: PrivatePart, playbook: Playbook) -> Plan:
    """Given a snapshot's manifest, its decoded private part and a playbook, return
    the steps that rebuild the host, in order, with warnings for what it cannot."""
    facts = private.facts
    ok = {s.name for s in manifest.sources if s.status == "ok"}
    by_source: dict[str, list[ObjectRecord]] = {}
    for o in manifest.objects:
        by_source.setdefault(o.source, []).append(o)
    names = tuple(
        ComposeName(c.name, c.project, c.service)
        for c in facts.containers
        if c.project and c.service
    )
    compose = f"compose {facts.compose}" if facts.compose else "compose"
    steps: list[Step] = [
        Step("preflight", "check the target: reachable, Docker, nothing to overwrite",
             PreflightParams()),
        Step("ensure-docker", f"Docker Engine and {compose} present",
             EnsureDockerParams(compose=facts.compose, names=names)),
    ]  # fmt: skip
    warnings: list[str] = [
        f"source {s.name} ({s.type}) failed in this snapshot: not restored"
        for s in manifest.sources
        if s.status != "ok"
    ]
    restorable = [e for name, e in private.sources.items() if name in ok]
    host_late: list[Step] = []  # the host's units and firewall: after every start
    for entry in restorable:
        if isinstance(entry.meta, host.Meta):
            for step in _source_steps(entry, by_source.get(entry.name, []), private):
                late = isinstance(step.params, HostServicesParams | HostFirewallParams)
                (host_late if late else steps).append(step)
    steps.append(steps.pop(1))  # ensure-docker: once the host's packages are in
    for kind in DATA_ORDER:
        for entry in restorable:
            if isinstance(entry.meta, kind):
                steps += _source_steps(entry, by_source.get(entry.name, []), private)
    started: set[tuple[str, str]] = set()
    db_projects: list[str] = []
    db_start: dict[str, str] = {}  # database step id -> its container's start step id
    db_image: dict[str, str] = {}  # a database's start step id -> its container's image
    db_volumes: dict[str, tuple[str, ...] | None] = {}  # ... -> the volumes it mounts
    for entry in restorable:
        if not isinstance(entry.meta, postgres.Meta):
            continue
        c = facts.container(entry.meta.container)
        if c is not None and c.project and c.service and c.project in facts.projects:
            project = facts.projects[c.project]
            first = _start(
                project, [c.service], f"start {c.service} of {c.project} (database)", True
            )
            own_start: str | None = first.id
            if (c.project, c.service) not in started:  # two databases of one server
                steps.append(first)
                db_image[first.id] = c.image
                db_volumes[first.id] = c.volumes
                started.add((c.project, c.service))
                db_projects.append(c.project)
        else:
            own_start = None
            warnings.append(
                f"database container {entry.meta.container} is not a compose service: "
                "start it yourself before the database step"
            )
        for step in _source_steps(entry, by_source.get(entry.name, []), private):
            if isinstance(step.params, DatabaseParams) and c is not None and c.project:
                # found on the target by what it is, not by the name it had on prod
                step.params = replace(step.params, project=c.project, service=c.service)
                if own_start is not None:
                    db_start[step.id] = own_start
            steps.append(step)
    # start groups: the playbook's order first, then what it did not name
    groups: list[StartGroup] = list(playbook.start)
    named = {g.project for g in groups}
    rest = [p for p in facts.projects if p not in named]
    rest.sort(
        key=lambda p: (
            0 if p in db_projects else (2 if _is_edge_proxy(facts.projects[p], facts) else 1),
            p,
        )
    )
    groups += [StartGroup(p) for p in rest]
    for g in groups:
        proj = facts.projects.get(g.project)
        if proj is None:
            warnings.append(f"playbook start group {g.project!r}: no such compose project")
            continue
        unknown = [s for s in g.services if s not in proj.services]
        if unknown:
            warnings.append(
                f"playbook start group {g.project!r}: no service {', '.join(unknown)} "
                "in this snapshot"
            )
        services = [s for s in g.services if s in proj.services] or sorted(proj.services)
        todo = [s for s in services if (g.project, s) not in started]
        if not todo:
            continue
        started.update((g.project, s) for s in todo)
        steps.append(_start(proj, todo, f"start {g.project}: {', '.join(todo)}"))
    for p, proj in facts.projects.items():
        for s in proj.services:
            if (p, s) not in started:
                steps.append(_start(proj, [s], f"start {p}: {s}"))
                started.add((p, s))
    host_late.sort(key=lambda s: isinstance(s.params, HostFirewallParams))  # firewall last
    steps += host_late
    running = [c for c in facts.containers if c.running]
    expected = sorted(c.name for c in running if c.project)
    for c in sorted(running, key=lambda c: c.name):
        if not c.project:
            warnings.append(f"container {c.name} was not started by compose: recreate it by hand")
    http = tuple(HttpCheckParams(h.name, h.url, h.expect_status, h.ca) for h in playbook.health)
    steps.append(
        Step(
            "health",
            f"health: {len(expected)} containers running, {len(http)} HTTP checks",
            HealthParams(
                containers=tuple(expected),
                services=tuple(n for n in names if n.name in expected),
                healthchecked=tuple(sorted(c.name for c in running if c.has_healthcheck)),
                http=http,
                timeout=playbook.health_timeout,
            ),
        )
    )
    steps.append(
        Step(
            "dns",
            "DNS records to point at the new host",
            DnsParams(zone=playbook.dns_zone, records=tuple(playbook.dns_records)),
        )
    )
    wire(steps, db_start, db_image, db_volumes)
    return Plan(manifest.id, manifest.host, playbook.name, steps, warnings)


def wire(
    steps: list[Step],
    db_start: dict[str, str],
    db_image: dict[str, str],
    db_volumes: dict[str, tuple[str, ...] | None],
) -> None:
    """Set what each step waits for (`Step.after`) from its kind. *db_start* maps a
    database step to its container's start, *db_image* that start (one per database
    container) to the container's image, *db_volumes* to the named volumes it mounts
    (None: not recorded). Every step waits only for steps before it, so the plan's
    order is one they can run in. See the module docstring for why each waits for
    what it does."""
    earlier: list[str] = []

    def of(*kinds: str) -> list[str]:
        return [s.id for s in steps if s.kind in kinds]

    docker_pk = [
        s.id for s in steps if isinstance(s.params, HostPackagesParams) and s.params.docker
    ]
    packages, users = of("host-packages"), of("host-users")
    daemon = [s.id for s in steps if isinstance(s.params, HostFilesParams) and s.params.only]
    hfiles = of("host-files")
    ensure, files_, images, volumes = of("ensure-docker"), of("files"), of("image"), of("volume")
    databases = of("database")
    starts: list[str] = list(db_image)  # the starts so far: the databases' first
    for s in steps:
        after: list[str] = ["preflight"] if s.kind != "preflight" else []
        p = s.params
        if isinstance(p, HostPackagesParams):
            after += [] if p.docker else docker_pk
        elif s.kind == "host-users":
            after += docker_pk
        elif isinstance(p, HostFilesParams) and p.only:
            after += docker_pk + users
        elif isinstance(p, HostFilesParams):
            after += packages + users + daemon
        elif s.kind == "ensure-docker":
            after += docker_pk + daemon
        elif s.kind == "files":
            after += hfiles
        elif isinstance(p, ImageParams) or s.kind == "volume":
            after += ensure
        elif isinstance(p, StartParams):
            after += ensure + files_
            if s.id in db_image:
                # only the volumes it mounts: compose may create the others, but no
                # container writes into them before their own step is done
                mounts = db_volumes.get(s.id)
                after += [x.id for x in steps if isinstance(x.params, VolumeParams)
                          and (mounts is None or x.params.volume in mounts)]  # fmt: skip
                # two `compose up` of one project at once race to create its network
                after += [x.id for x in steps if isinstance(x.params, StartParams)
                          and x.params.project == p.project and x.id in earlier]  # fmt: skip
                image = db_image.get(s.id, "")
                mine = [x.id for x in steps if isinstance(x.params, ImageParams)
                        and image in x.params.refs]  # fmt: skip
                after += mine or images
            else:
                after += volumes
                # in plan order, one at a time: the playbook's groups, then the
                # projects it does not name, edge proxies last; projects sharing a
                # named network or volume would race to create it
                after += images + databases + starts
                starts.append(s.id)
        elif s.kind == "database":
            # through its own server; one not started by compose: once all is in
            after += ensure + ([db_start[s.id]] if s.id in db_start else files_ + images + volumes)
        elif s.kind == "host-services":
            after += ensure + hfiles + files_
        elif s.kind in ("host-firewall", "health", "dns"):
            after = list(earlier)
        s.after = tuple(a for a in dict.fromkeys(after) if a in earlier)
        earlier.append(s.id)
