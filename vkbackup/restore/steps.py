"""Typed restore steps, and the handle a step's code gets to act on the target.

A restore is a list of steps. Each step's parameters are one frozen dataclass
per kind, so what a step needs is spelled out and checked by mypy, not picked
out of a dict by string keys. What a kind *is* travels with its parameter
class as class attributes:

- `kind`: the name shown in plans, reports and `--only`;
- `resumable`: once done, the step is recorded in the target's resume state
  and skipped by a re-run (data and start steps; not the checks, which are
  cheap and must see the target as it is now);

What a step waits for is not a property of its kind but of the plan: each
`Step` lists in `after` the ids of the steps that must be done before it
starts (`vkbackup.restore.plan` decides them), and the runner starts any step
whose `after` is done, several at a time.

Which function runs a kind lives in `vkbackup.restore.runner` (a table from
parameter class to handler); the handlers of data steps live in the source
modules that took the data (`vkbackup/sources/*.py`), beside the snapshot
half, so one module holds everything vkbackup does with one kind of thing.

`StepContext` is what a handler gets: the connection to the target, and the
one way to stream a stored object there (`feed`), which verifies size and
sha256, authenticates with age, checks tar headers where asked, and
decompresses here when the target lacks the tool. Everything a handler
proves is appended to `verified`, which the report shows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from vkbackup.crypto import Identity
from vkbackup.logs import get_logger
from vkbackup.manifest import ObjectRecord
from vkbackup.progress import CountingReader, Progress
from vkbackup.restore import objects
from vkbackup.restore.targuard import GuardState
from vkbackup.storage.base import Storage
from vkbackup.transport.base import Transport

log = get_logger("restore")


class StepParams:
    """Base of every step kind's parameters."""

    kind: ClassVar[str]
    resumable: ClassVar[bool] = False


@dataclass(frozen=True)
class PreflightParams(StepParams):
    kind: ClassVar[str] = "preflight"


@dataclass(frozen=True)
class ComposeName:
    """A container prod's compose started: its name there, its project and service."""

    name: str
    project: str
    service: str


@dataclass(frozen=True)
class EnsureDockerParams(StepParams):
    """Docker Engine and the compose flavour prod ran (*compose*: "v2", "v1" or None);
    *names*: every compose container of the snapshot, to refuse a target whose
    compose would name them differently before anything starts."""

    kind: ClassVar[str] = "ensure-docker"
    compose: str | None = None
    names: tuple[ComposeName, ...] = ()


@dataclass(frozen=True)
class FilesParams(StepParams):
    """Extract the files source's tar at /: only *members* (the recorded paths), each
    also a match of *patterns* (the configured globs) or below one. The members came
    from the host, the patterns from the config: a member must satisfy both."""

    kind: ClassVar[str] = "files"
    resumable: ClassVar[bool] = True
    members: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageParams(StepParams):
    """`docker load` one saved archive holding *refs*."""

    kind: ClassVar[str] = "image"
    resumable: ClassVar[bool] = True
    refs: tuple[str, ...] = ()


@dataclass(frozen=True)
class VolumeParams(StepParams):
    """Create *volume* with its recorded labels (`{{json .Labels}}` text) and fill it
    from the step's incremental chain."""

    kind: ClassVar[str] = "volume"
    resumable: ClassVar[bool] = True
    volume: str = ""
    labels: str = ""


@dataclass(frozen=True)
class DatabaseParams(StepParams):
    """Restore roles and the dump of *database* into the server in *container*, then
    compare every table's row count with *row_counts*."""

    kind: ClassVar[str] = "database"
    resumable: ClassVar[bool] = True
    container: str = ""  # the name on prod; on the target it is found by project/service
    project: str | None = None
    service: str | None = None
    database: str = ""
    user: str = "postgres"
    major: int | None = None
    row_counts: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class PitrParams(StepParams):
    """Recover the server of *database* to a point in time (`vkbackup.pitr.recover`):
    the base backup (the step's first object) into the container's data
    directory, the streamed WAL (the other objects, staged under the names in
    *wal*), then PostgreSQL's own recovery up to *target_time* or *target_lsn*
    (neither: all the WAL there is). A database step: the plan waits for it as
    for a dump's."""

    kind: ClassVar[str] = "database"
    resumable: ClassVar[bool] = True
    container: str = ""
    project: str | None = None
    service: str | None = None
    database: str = ""
    user: str = "postgres"
    major: int = 0
    data_directory: str = ""
    base_snapshot: str = ""
    target_time: str = ""  # ISO 8601 with an offset
    target_lsn: str = ""
    wal: tuple[str, ...] = ()  # the file name each WAL object is staged as
    segment_size: int = 16 * 1024 * 1024
    wal_until: str = ""  # when the newest WAL staged was stored (ISO 8601)


@dataclass(frozen=True)
class StartParams(StepParams):
    """`compose up -d` *services* of *project*, from its recorded files; with
    *no_deps*, not the services they depend on (a database's container starts
    before the other images are in: its dependencies would be pulled)."""

    kind: ClassVar[str] = "start"
    resumable: ClassVar[bool] = True
    project: str = ""
    services: tuple[str, ...] = ()
    working_dir: str | None = None
    config_files: str | None = None  # compose's label: comma-separated
    no_deps: bool = False


@dataclass(frozen=True)
class HttpCheckParams:
    name: str
    url: str
    expect_status: int = 200
    ca: str | None = None  # https: the CA file on the target the certificate must verify


@dataclass(frozen=True)
class HealthParams(StepParams):
    """Every container that ran at snapshot time runs, those with a healthcheck are
    healthy, and every HTTP check answers as expected, within *timeout* seconds."""

    kind: ClassVar[str] = "health"
    containers: tuple[str, ...] = ()
    services: tuple[ComposeName, ...] = ()  # the same containers, found by project/service
    healthchecked: tuple[str, ...] = ()
    http: tuple[HttpCheckParams, ...] = ()
    timeout: float = 120.0


@dataclass(frozen=True)
class DnsParams(StepParams):
    kind: ClassVar[str] = "dns"
    zone: str | None = None
    records: tuple[str, ...] = ()


# -- the host source's steps (vkbackup/sources/host.py) ------------------------------


@dataclass(frozen=True)
class HostPackagesParams(StepParams):
    """Lay down prod's apt sources and keys (*sources*: tar members under /etc/apt),
    then install every package of *packages* (name, version, arch) that is missing or
    at another version. *members*: every member of the host tar, which the tar guard
    allows while tar extracts only *sources*. *docker*: these are the packages Docker
    Engine and Compose come from, which every container step waits for (the others
    install while the data streams in)."""

    kind: ClassVar[str] = "host-packages"
    resumable: ClassVar[bool] = True
    packages: tuple[tuple[str, str, str], ...] = ()
    sources: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    docker: bool = False


@dataclass(frozen=True)
class HostGroup:
    name: str
    gid: int
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostUser:
    name: str
    uid: int
    gid: int
    group: str | None = None  # the primary group's name on prod
    gecos: str = ""
    home: str = ""
    shell: str = ""


@dataclass(frozen=True)
class HostUsersParams(StepParams):
    """Create the missing *groups* and *users* with their recorded ids where free;
    never change an existing account."""

    kind: ClassVar[str] = "host-users"
    resumable: ClassVar[bool] = True
    groups: tuple[HostGroup, ...] = ()
    users: tuple[HostUser, ...] = ()


@dataclass(frozen=True)
class HostFilesParams(StepParams):
    """Extract the host tar at /: only *members*, owners mapped by name; with *only*,
    just those of them (Docker's and containerd's configuration, which the container
    steps wait for)."""

    kind: ClassVar[str] = "host-files"
    resumable: ClassVar[bool] = True
    members: tuple[str, ...] = ()
    only: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostServicesParams(StepParams):
    """Enable *units* (enabled on prod) where they exist; restart *restart*."""

    kind: ClassVar[str] = "host-services"
    resumable: ClassVar[bool] = True
    units: tuple[str, ...] = ()
    restart: tuple[str, ...] = ("caddy",)


@dataclass(frozen=True)
class HostFirewallParams(StepParams):
    """Apply prod's firewall (*firewall*: "ufw", "nftables", "iptables" or "none";
    *status*: `ufw status verbose` or the ruleset) behind a rollback that only a new
    SSH connection cancels, then compare with *status*."""

    kind: ClassVar[str] = "host-firewall"
    resumable: ClassVar[bool] = True
    firewall: str = "none"
    active: bool = False
    status: str = ""


@dataclass
class Step:
    """One unit of work. *id* is stable: the resume state keys on it. *after*: the
    ids of the steps that must be done before this one starts (each earlier in the
    plan; one the plan does not hold, cut by --only, counts as done)."""

    id: str
    title: str
    params: StepParams
    source: str | None = None
    objects: list[ObjectRecord] = field(default_factory=list)
    after: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.params.kind

    @property
    def resumable(self) -> bool:
        return self.params.resumable

    @property
    def bytes(self) -> int:
        return sum(o.size for o in self.objects)


class StepContext:
    """What a step handler acts with: one connection to the target (*t*), the stored
    objects, and the restore's list of what was verified."""

    def __init__(
        self,
        t: Transport,
        storage: Storage,
        identities: Sequence[Identity],
        snapshot_id: str,
        progress: Progress,
        verified: list[str],
    ) -> None:
        self.t = t
        self.storage = storage
        self.identities = identities
        self.snapshot_id = snapshot_id
        self.progress = progress
        self.verified = verified
        self.compose: list[str] | None = None  # the target's compose command, once known
        self._has_zstd: bool | None = None
        # object key -> its recorded plaintext size and sha256 (session.plain_checks)
        self.expect: Mapping[str, objects.PlainCheck] = {}

    def on(self, t: Transport) -> StepContext:
        """The same restore on another connection (steps running side by side)."""
        other = StepContext(
            t, self.storage, self.identities, self.snapshot_id, self.progress, self.verified
        )
        other.compose = self.compose
        other._has_zstd = self._has_zstd
        other.expect = self.expect
        return other

    def sendable(self, compression: str) -> str:
        """The compression an object can cross to the target in: as stored when the
        target has the decompressor, else "none" (decompressed here, which costs
        bandwidth, not trust: the guard checks the same tar either way)."""
        if compression != "zstd":
            return compression
        if self._has_zstd is None:
            res = self.t.run(["bash", "-c", "command -v zstd"], check=False)
            self._has_zstd = res.status == 0
            if not self._has_zstd:
                log.info("%s has no zstd: zstd objects are decompressed here", self.t.name)
        return "zstd" if self._has_zstd else "none"

    def read(self, obj: ObjectRecord) -> bytes:
        """A small object's verified plaintext (roles SQL), held in memory."""
        return objects.read_object(
            self.storage, obj, self.identities, expect=self.expect.get(obj.key)
        )

    def feed(
        self,
        obj: ObjectRecord,
        make_argv: Callable[[str], list[str]],
        *,
        tar: objects.TarCheck | None = None,
    ) -> None:
        """Stream one object to the target command make_argv(compression) builds for
        the compression it is sent in (see `sendable`). With *tar*, every tar header is
        checked as it passes (vkbackup.restore.targuard): a hostile archive (absolute
        or '..' names, links out of the root, devices) stops the stream before the
        member reaches the target."""
        counter = self.progress.counter(obj.name)
        send = self.sendable(obj.compression)
        expect = self.expect.get(obj.key)
        stream = objects.open_object(
            self.storage,
            obj,
            self.identities,
            tar=tar,
            decompress=send != obj.compression,
            expect=expect,
        )
        try:
            self.t.feed(make_argv(send), CountingReader(stream, counter))
        finally:
            counter.done = True
            stream.close()
        what = "size and sha256 match, age authenticated"
        if expect is not None:
            what += ", plaintext sha256 matches"
        if tar is not None:
            what += ", tar headers checked"
        if send != obj.compression:
            what += f", {obj.compression} decompressed here"
        self.verified.append(f"{obj.key}: {what}")


__all__ = [
    "ComposeName",
    "DatabaseParams",
    "DnsParams",
    "EnsureDockerParams",
    "FilesParams",
    "GuardState",
    "HealthParams",
    "HostFilesParams",
    "HostFirewallParams",
    "HostGroup",
    "HostPackagesParams",
    "HostServicesParams",
    "HostUser",
    "HostUsersParams",
    "HttpCheckParams",
    "ImageParams",
    "PitrParams",
    "PreflightParams",
    "StartParams",
    "Step",
    "StepContext",
    "StepParams",
    "VolumeParams",
]
