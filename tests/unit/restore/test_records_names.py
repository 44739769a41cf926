"""A manifest's private part is read back from storage: every container, volume,
image, compose project and service, database and role name in it must follow
Docker's and PostgreSQL's rules, or decoding refuses it with an IntegrityError
naming the manifest and the field (issue 16: names are data, never code)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from vkbackup.errors import IntegrityError
from vkbackup.facts import compose_projects
from vkbackup.restore.records import decode_private
from vkbackup.sources import docker_image, docker_volume, postgres

WHERE = "snapshots/prod/20261126T020000Z-abcd.json"
IMAGE_KEY = "data/prod/20261126T020000Z-abcd/images/images.tar.gz.age"
DIGEST = "sha256:" + "ab" * 32


def container(name: str, project: str, service: str, image: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "labels": {
            "com.docker.compose.project": project,
            "com.docker.compose.service": service,
            "com.docker.compose.project.working_dir": f"/opt/{project}",
        },
        "running": True,
        "has_healthcheck": False,
        "ports": [],
        "networks": [],
    }


def private() -> dict[str, Any]:
    """A valid private part with the lab's real names."""
    containers = [
        container("chatwoot-postgres-1", "chatwoot", "postgres", "postgres:15-lab"),
        container("chatwoot-chatwoot-1", "chatwoot", "chatwoot", f"chatwoot:lab@{DIGEST}"),
        container("chatwoot-chatwoot-sidekiq-1", "chatwoot", "chatwoot-sidekiq", "chatwoot:lab"),
        container("platform-api", "platform-api", "platform-api", "platform-api:latest"),
        container("janus-gateway", "janus", "janus-gateway", "ghcr.io/vk/janus-gateway:1.2"),
    ]
    return {
        "facts": {
            "containers": containers,
            "compose_projects": compose_projects(containers),
            "compose": "v2 2.27.0",
        },
        "sources": {
            "chatwoot-db": {
                "type": "postgres",
                "meta": {
                    "container": "chatwoot-postgres-1",
                    "database": "chatwoot_production",
                    "user": "postgres",
                    "server": {"major": 15, "image": "postgres:15-lab"},
                    "row_counts": {"public.accounts": 3},
                },
            },
            "chatwoot-storage": {
                "type": "docker-volume",
                "meta": {"volume": "chatwoot_storage_data", "labels": "{}"},
            },
            "images": {
                "type": "docker-image",
                "meta": {"images": [{"ref": "platform-api:latest"}, {"ref": "vk-agent:latest"}]},
            },
        },
        "objects": {IMAGE_KEY: {"refs": ["platform-api:latest", "vk-agent:latest"]}},
    }


def test_the_lab_names_decode() -> None:
    p = decode_private(private(), WHERE)
    assert [c.name for c in p.facts.containers][:2] == [
        "chatwoot-postgres-1",
        "chatwoot-chatwoot-1",
    ]
    assert p.facts.containers[1].image == f"chatwoot:lab@{DIGEST}"
    assert (
        p.facts.projects["chatwoot"].services["chatwoot-sidekiq"] == "chatwoot-chatwoot-sidekiq-1"
    )
    db = p.sources["chatwoot-db"].meta
    assert isinstance(db, postgres.Meta)
    assert (db.container, db.database, db.user, db.image) == (
        "chatwoot-postgres-1",
        "chatwoot_production",
        "postgres",
        "postgres:15-lab",
    )
    vol = p.sources["chatwoot-storage"].meta
    assert isinstance(vol, docker_volume.Meta) and vol.volume == "chatwoot_storage_data"
    img = p.sources["images"].meta
    assert isinstance(img, docker_image.Meta)
    assert img.images == ("platform-api:latest", "vk-agent:latest")
    assert p.refs(IMAGE_KEY, "x") == ["platform-api:latest", "vk-agent:latest"]


def test_absent_optional_names_stay_absent() -> None:
    doc = private()
    doc["facts"]["containers"].append(
        {"name": "hand-made", "image": None, "labels": {}, "running": False}
    )
    doc["sources"]["chatwoot-db"]["meta"]["server"] = {"major": 15}  # no image recorded
    p = decode_private(doc, WHERE)
    hand = p.facts.container("hand-made")
    assert hand is not None and hand.image == "" and hand.project is None
    db = p.sources["chatwoot-db"].meta
    assert isinstance(db, postgres.Meta) and db.image == ""


Mutate = Callable[[dict[str, Any], str], None]


def _set(*path: str | int) -> Mutate:
    def mutate(doc: dict[str, Any], bad: str) -> None:
        node: Any = doc
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = bad

    return mutate


def _rename_project(doc: dict[str, Any], bad: str) -> None:
    projects = doc["facts"]["compose_projects"]
    projects[bad] = projects.pop("chatwoot")


def _rename_service(doc: dict[str, Any], bad: str) -> None:
    services = doc["facts"]["compose_projects"]["chatwoot"]["services"]
    services[bad] = services.pop("postgres")


LABELS = ("facts", "containers", 0, "labels")
DB_META = ("sources", "chatwoot-db", "meta")

# (how to plant the name, the field the error must name, what it calls the name)
FIELDS: list[tuple[Mutate, str, str]] = [
    (_set("facts", "containers", 1, "name"), "facts.containers[1].name", "Docker container name"),
    (_set("facts", "containers", 2, "image"), "facts.containers[2].image", "Docker image"),
    (
        _set(*LABELS, "com.docker.compose.project"),
        "facts.containers[0].labels.com.docker.compose.project",
        "compose project name",
    ),
    (
        _set(*LABELS, "com.docker.compose.service"),
        "facts.containers[0].labels.com.docker.compose.service",
        "compose service name",
    ),
    (_rename_project, "facts.compose_projects (a key)", "compose project name"),
    (
        _rename_service,
        "facts.compose_projects.chatwoot.services (a key)",
        "compose service name",
    ),
    (
        _set("facts", "compose_projects", "chatwoot", "services", "chatwoot"),
        "facts.compose_projects.chatwoot.services.chatwoot",
        "Docker container name",
    ),
    (_set(*DB_META, "container"), "sources.chatwoot-db.meta.container", "Docker container name"),
    (_set(*DB_META, "database"), "sources.chatwoot-db.meta.database", "PostgreSQL database"),
    (_set(*DB_META, "user"), "sources.chatwoot-db.meta.user", "PostgreSQL role name"),
    (
        _set(*DB_META, "server", "image"),
        "sources.chatwoot-db.meta.server.image",
        "Docker image reference",
    ),
    (
        _set("sources", "chatwoot-storage", "meta", "volume"),
        "sources.chatwoot-storage.meta.volume",
        "Docker volume name",
    ),
    (
        _set("sources", "images", "meta", "images", 1, "ref"),
        "sources.images.meta.images[1].ref",
        "Docker image reference",
    ),
    (_set("objects", IMAGE_KEY, "refs", 1), f"objects.{IMAGE_KEY}.refs[1]", "Docker image"),
]

HOSTILE = [
    "pg$(touch /tmp/x)",
    "x\nFAKE: restore ok",
    "a'b",
    "a`id`",
    "a b",
    "-rf",
    "..",
    "a\x00b",
    "\x1b[2Jok",
    "ch\u0430twoot",
    "x" * 5000,
]


@pytest.mark.parametrize("bad", HOSTILE)
@pytest.mark.parametrize(("mutate", "field", "kind"), FIELDS)
def test_a_hostile_name_in_the_manifest_is_refused(
    mutate: Mutate, field: str, kind: str, bad: str
) -> None:
    doc = copy.deepcopy(private())
    mutate(doc, bad)
    with pytest.raises(IntegrityError) as exc:
        decode_private(doc, WHERE)
    msg = str(exc.value)
    assert msg.startswith(f"{WHERE}: {field}: not a valid {kind}")
    assert msg.isascii() and msg.isprintable() and len(msg) < 500


def test_a_missing_container_name_is_refused() -> None:
    doc = private()
    del doc["facts"]["containers"][3]["name"]
    with pytest.raises(IntegrityError, match=r"facts\.containers\[3\]\.name: not a valid Docker"):
        decode_private(doc, WHERE)


def test_refs_that_are_not_a_list_are_refused() -> None:
    doc = private()
    doc["objects"][IMAGE_KEY]["refs"] = "platform-api:latest"
    with pytest.raises(IntegrityError, match=r"refs: expected a list"):
        decode_private(doc, WHERE)


def test_a_non_string_name_is_refused_as_such() -> None:
    doc = private()
    doc["facts"]["containers"][0]["name"] = ["chatwoot-postgres-1"]
    with pytest.raises(IntegrityError, match=r"facts\.containers\[0\]\.name: expected a string"):
        decode_private(doc, WHERE)


def test_a_container_s_mounts_give_its_named_volumes_and_skip_bad_names() -> None:
    from vkbackup.restore.records import Container

    doc = {
        "name": "chatwoot-postgres-1", "image": "postgres:15", "labels": {}, "running": True,
        "mounts": [
            {"type": "volume", "name": "chatwoot_pgdata"},
            {"type": "bind", "name": None, "source": "/opt/x"},
            {"type": "volume", "name": "v"},  # a plugin's name Docker's local driver refuses
            {"type": "volume", "name": "../etc"},  # a hostile record
            {"type": "volume", "name": 7},
        ],
    }  # fmt: skip
    c = Container.decode(doc, "facts.containers[0]")
    assert c.volumes == ("chatwoot_pgdata",)  # the rest match no volume step anyway
    assert Container.decode({**doc, "mounts": []}, "c").volumes == ()
    no_record = {k: v for k, v in doc.items() if k != "mounts"}
    assert Container.decode(no_record, "c").volumes is None  # unknown: wait for all
