"""The manifest's private part as typed records, decoded once where it is read.

The private part is JSON that the snapshot wrote (host facts, each source's
metadata, per-object notes). Restore, deep verify and drill teardown read it
through these records instead of picking a `dict[str, Any]` apart with string
keys in several places: a missing or mistyped field is an IntegrityError that
names the manifest and the field, not a KeyError halfway through a restore.

Each source module owns the record of its own metadata (`Meta.decode`), next
to the code that writes it; this module holds what is not any one source's:
host facts, containers and compose projects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vkbackup.errors import IntegrityError
from vkbackup.manifest import Manifest, open_private
from vkbackup.sources import docker_image, docker_volume, files, host, postgres

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


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    labels: dict[str, str]
    running: bool
    has_healthcheck: bool
    ports: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()

    @property
    def project(self) -> str | None:
        return self.labels.get("com.docker.compose.project") or None

    @property
    def service(self) -> str | None:
        return self.labels.get("com.docker.compose.service") or None

    @classmethod
    def decode(cls, doc: Any, where: str) -> Container:
        d = _dict(doc, where)
        labels = {str(k): str(v) for k, v in _dict(d.get("labels"), f"{where}.labels").items()}
        return cls(
            name=_str(d.get("name"), f"{where}.name"),
            image=_str(d.get("image"), f"{where}.image"),
            labels=labels,
            running=bool(d.get("running")),
            has_healthcheck=bool(d.get("has_healthcheck")),
            ports=tuple(str(p) for p in _list(d.get("ports"), f"{where}.ports")),
            networks=tuple(str(n) for n in _list(d.get("networks"), f"{where}.networks")),
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
        services = {
            str(k): _str(v, f"{where}.services.{k}")
            for k, v in _dict(d.get("services"), f"{where}.services").items()
        }
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
        projects = {
            str(p): ComposeProject.decode(str(p), v, f"{where}.compose_projects.{p}")
            for p, v in _dict(d.get("compose_projects"), f"{where}.compose_projects").items()
        }
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
        sources[str(name)] = SourceEntry(str(name), kind, meta)
    notes = {
        str(k): v
        for k, v in _dict(doc.get("objects"), f"{where}: objects").items()
        if isinstance(v, dict)
    }
    return PrivatePart(facts=facts, sources=sources, object_notes=notes)


def read_private(manifest: Manifest, identities: Sequence[Any]) -> PrivatePart:
    """Decrypt (once, cached on the manifest) and decode a manifest's private part."""
    from vkbackup import layout

    where = layout.manifest_key(manifest.host, manifest.id)
    return decode_private(open_private(manifest, identities), where)
