"""The manifest's private part as typed records, decoded once where it is read.

The private part is JSON that the snapshot wrote (host facts, each source's
metadata, per-object notes). Restore, deep verify and drill teardown read it
through these records instead of picking a `dict[str, Any]` apart with string
keys in several places: a missing or mistyped field is an IntegrityError that
names the manifest and the field, not a KeyError halfway through a restore.

Each source module owns the record of its own metadata (`Meta.decode`), next
to the code that writes it; this module holds what is not any one source's:
host facts, containers and compose projects.

Names in it are data, never code (`vkbackup.names`): every container, volume,
image, compose project and service, database and role name read here must
follow Docker's or PostgreSQL's own rule, or the whole private part is refused
with an IntegrityError naming the manifest and the field, before any restore
step is built from it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vkbackup import names
from vkbackup.errors import IntegrityError, VkError
from vkbackup.manifest import Manifest, open_private
from vkbackup.sources import docker_image, docker_volume, files, host, postgres
from vkbackup.textsafe import printable

SourceMeta = postgres.Meta | files.Meta | docker_volume.Meta | docker_image.Meta | host.Meta

_META: dict[str, Any] = {
    "postgres": postgres.Meta,
    "files": files.Meta,
    "docker-volume": docker_volume.Meta,
    "docker-image": docker_image.Meta,
    "host": host.Meta,
}


def _dict(doc: Any, where: str) -> dict[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise IntegrityError(f"{where}: expected an object")
    return doc


def _list(doc: Any, where: str) -> list[Any]:
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise IntegrityError(f"{where}: expected a list")
    return doc


def _str(doc: Any, where: str) -> str:
    if doc is None:
        return ""
    if not isinstance(doc, str):
        raise IntegrityError(f"{where}: expected a string")
    return doc


def _name(check: Callable[..., str], doc: Any, where: str) -> str:
    """A required name from the manifest, checked by *check* (a names.check_*)."""
    return check(_str(doc, where), where, IntegrityError)


def _opt_name(check: Callable[..., str], doc: Any, where: str) -> str:
    """An optional name: absent or empty stays "", anything else is checked."""
    value = _str(doc, where)
    return check(value, where, IntegrityError) if value else ""


def _volumes(doc: Any, where: str) -> tuple[str, ...]:
    """The names of the named volumes among a container's recorded mounts. A name
    that fails the check (a plugin's volume, a hostile record) is left out rather
    than refusing the whole record: it can match no volume step, whose names were
    checked on their own."""
    out = []
    for m in _list(doc, where):
        if isinstance(m, dict) and m.get("type") == "volume" and isinstance(m.get("name"), str):
            with contextlib.suppress(VkError):
                out.append(names.check_volume(m["name"], where, IntegrityError))
    return tuple(out)


_PROJECT_LABEL = "com.docker.compose.project"
_SERVICE_LABEL = "com.docker.compose.service"


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    labels: dict[str, str]
    running: bool
    has_healthcheck: bool
    ports: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    volumes: tuple[str, ...] | None = None  # named volumes it mounts; None: not recorded

    @property
    def project(self) -> str | None:
        return self.labels.get(_PROJECT_LABEL) or None

    @property
    def service(self) -> str | None:
        return self.labels.get(_SERVICE_LABEL) or None

    @classmethod
    def decode(cls, doc: Any, where: str) -> Container:
        d = _dict(doc, where)
        labels = {str(k): str(v) for k, v in _dict(d.get("labels"), f"{where}.labels").items()}
        for label, check in (
            (_PROJECT_LABEL, names.check_project),
            (_SERVICE_LABEL, names.check_service),
        ):
            _opt_name(check, labels.get(label), f"{where}.labels.{label}")
        return cls(
            name=_name(names.check_container, d.get("name"), f"{where}.name"),
            image=_opt_name(names.check_image, d.get("image"), f"{where}.image"),
            labels=labels,
            running=bool(d.get("running")),
            has_healthcheck=bool(d.get("has_healthcheck")),
            ports=tuple(str(p) for p in _list(d.get("ports"), f"{where}.ports")),
            networks=tuple(str(n) for n in _list(d.get("networks"), f"{where}.networks")),
            volumes=_volumes(d.get("mounts"), f"{where}.mounts") if "mounts" in d else None,
        )


@dataclass(frozen=True)
class ComposeProject:
    name: str
    working_dir: str | None
    config_files: str | None
    services: dict[str, str]  # service -> container name

    @classmethod
    def decode(cls, name: str, doc: Any, where: str) -> ComposeProject:
        d = _dict(doc, where)
        services: dict[str, str] = {}
        for k, v in _dict(d.get("services"), f"{where}.services").items():
            svc = _name(names.check_service, k, f"{where}.services (a key)")
            services[svc] = _name(names.check_container, v, f"{where}.services.{svc}")
        return cls(
            name=name,
            working_dir=_str(d.get("working_dir"), f"{where}.working_dir") or None,
            config_files=_str(d.get("config_files"), f"{where}.config_files") or None,
            services=services,
        )


@dataclass(frozen=True)
class HostFacts:
    containers: tuple[Container, ...] = ()
    projects: dict[str, ComposeProject] = field(default_factory=dict)
    compose: str | None = None  # the flavour prod ran: "v2" or "v1" (None: no compose)

    def container(self, name: str) -> Container | None:
        return next((c for c in self.containers if c.name == name), None)

    @classmethod
    def decode(cls, doc: Any, where: str) -> HostFacts:
        d = _dict(doc, where)
        containers = tuple(
            Container.decode(c, f"{where}.containers[{i}]")
            for i, c in enumerate(_list(d.get("containers"), f"{where}.containers"))
        )
        projects: dict[str, ComposeProject] = {}
        for p, v in _dict(d.get("compose_projects"), f"{where}.compose_projects").items():
            name = _name(names.check_project, p, f"{where}.compose_projects (a key)")
            projects[name] = ComposeProject.decode(name, v, f"{where}.compose_projects.{name}")
        flavour = _str(d.get("compose"), f"{where}.compose").split(" ")[0] or None
        if flavour not in (None, "v1", "v2"):
            raise IntegrityError(f"{where}.compose: unknown compose flavour {flavour!r}")
        return cls(containers=containers, projects=projects, compose=flavour)


@dataclass(frozen=True)
class SourceEntry:
    name: str
    type: str
    meta: SourceMeta | None  # None: a type this version does not know


@dataclass(frozen=True)
class PrivatePart:
    facts: HostFacts
    sources: dict[str, SourceEntry]
    object_notes: dict[str, dict[str, Any]]  # object key -> what the snapshot noted

    def refs(self, key: str, default: str) -> list[str]:
        """The image references a `docker save` object holds (default: its name)."""
        refs = (self.object_notes.get(key) or {}).get("refs")
        if isinstance(refs, list) and all(isinstance(r, str) for r in refs):
            return list(refs)
        return [default]


def _check_meta_names(meta: SourceMeta, where: str) -> None:
    """Raise IntegrityError if a name a source's record holds breaks its rule. (The
    source modules decode their records' shape; the names are checked here, once,
    for every kind.)"""
    if isinstance(meta, postgres.Meta):
        _name(names.check_container, meta.container, f"{where}.container")
        _name(names.check_database, meta.database, f"{where}.database")
        _name(names.check_role, meta.user, f"{where}.user")
        _opt_name(names.check_image, meta.image, f"{where}.server.image")
    elif isinstance(meta, docker_volume.Meta):
        _name(names.check_volume, meta.volume, f"{where}.volume")
    elif isinstance(meta, docker_image.Meta):
        for i, ref in enumerate(meta.images):
            _name(names.check_image, ref, f"{where}.images[{i}].ref")


def _check_refs(notes: dict[str, dict[str, Any]], where: str) -> None:
    """Raise IntegrityError if an object's noted image references are not a list of
    valid references (they name what `docker load` restores)."""
    for key, note in notes.items():
        refs = note.get("refs")
        if refs is None:
            continue
        w = f"{where}: objects.{printable(key)}.refs"
        for i, ref in enumerate(_list(refs, w)):
            _name(names.check_image, ref, f"{w}[{i}]")


def decode_private(doc: dict[str, Any], where: str) -> PrivatePart:
    """Given a manifest's decrypted private part, return it as typed records. Raise
    IntegrityError naming *where* and the field for a field of the wrong shape."""
    facts = HostFacts.decode(doc.get("facts"), f"{where}: facts")
    sources: dict[str, SourceEntry] = {}
    for name, info in _dict(doc.get("sources"), f"{where}: sources").items():
        w = f"{where}: sources.{name}"
        d = _dict(info, w)
        kind = _str(d.get("type"), f"{w}.type")
        decoder = _META.get(kind)
        meta = decoder.decode(_dict(d.get("meta"), f"{w}.meta"), f"{w}.meta") if decoder else None
        if meta is not None:
            _check_meta_names(meta, f"{w}.meta")
        sources[str(name)] = SourceEntry(str(name), kind, meta)
    notes = {
        str(k): v
        for k, v in _dict(doc.get("objects"), f"{where}: objects").items()
        if isinstance(v, dict)
    }
    _check_refs(notes, where)
    return PrivatePart(facts=facts, sources=sources, object_notes=notes)


def read_private(manifest: Manifest, identities: Sequence[Any]) -> PrivatePart:
    """Decrypt (once, cached on the manifest) and decode a manifest's private part."""
    from vkbackup import layout

    where = layout.manifest_key(manifest.host, manifest.id)
    return decode_private(open_private(manifest, identities), where)
