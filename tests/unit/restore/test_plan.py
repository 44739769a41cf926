"""Restore plan derivation (pure) and playbook parsing."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from vkbackup.errors import ConfigError
from vkbackup.manifest import Manifest, ObjectRecord, SourceRecord
from vkbackup.restore.plan import derive_plan
from vkbackup.restore.playbook import Playbook, load_playbook, parse_playbook
from vkbackup.restore.records import PrivatePart, decode_private
from vkbackup.restore.steps import Step
from vkbackup.restore.target import caddy_sites

REPO = Path(__file__).resolve().parents[3]
SID = "20261126T020000Z-abcd"


def obj(source: str, name: str, role: str) -> ObjectRecord:
    return ObjectRecord(
        key=f"data/prod/{SID}/{source}/{name}",
        source=source,
        name=name,
        role=role,
        size=100,
        sha256="0" * 64,
        compression="gzip",
    )


def container(
    name: str, project: str | None, service: str, image: str = "x", volumes: tuple[str, ...] = ()
) -> dict[str, Any]:
    labels = {}
    if project:
        labels = {
            "com.docker.compose.project": project,
            "com.docker.compose.service": service,
            "com.docker.compose.project.working_dir": f"/opt/{project}",
            "com.docker.compose.project.config_files": f"/opt/{project}/docker-compose.yml",
        }
    return {
        "name": name,
        "image": image,
        "labels": labels,
        "running": True,
        "has_healthcheck": name == "chatwoot-chatwoot-sidekiq-1",
        "ports": [],
        "networks": [],
        "mounts": [{"type": "volume", "name": v, "destination": "/data"} for v in volumes]
        + [{"type": "bind", "source": "/opt/x", "destination": "/x"}],
    }


def par(step: Step) -> Any:
    """A step's typed parameters, for attribute access in assertions."""
    return step.params


CONTAINERS = [
    container("chatwoot-postgres-1", "chatwoot", "postgres", "postgres:15-lab", ("pgdata",)),
    container("chatwoot-redis-1", "chatwoot", "redis"),
    container("chatwoot-chatwoot-1", "chatwoot", "chatwoot"),
    container("chatwoot-chatwoot-sidekiq-1", "chatwoot", "chatwoot-sidekiq"),
    container("platform-api", "platform-api", "platform-api"),
    container("caddy", "caddy", "caddy", "caddy:lab"),
    container("hand-made", None, ""),
]
OBJECTS = [
    obj("db", "dump.pgdump.age", "pg-dump"),
    obj("db", "globals.sql.age", "pg-globals"),
    obj("secrets", "files.tar.gz.age", "tar"),
    obj("storage", "volume.tar.gz.age", "tar"),
    obj("images", "images.tar.gz.age", "image"),
]


def lab_like() -> tuple[Manifest, PrivatePart]:
    objects = list(OBJECTS)
    m = Manifest(
        id=SID,
        host="prod",
        started="",
        finished="",
        tool_version="0",
        status="partial",
        objects=objects,
        sources=[
            SourceRecord("db", "postgres", "ok"),
            SourceRecord("secrets", "files", "ok"),
            SourceRecord("storage", "docker-volume", "ok"),
            SourceRecord("images", "docker-image", "ok"),
            SourceRecord("broken", "files", "failed"),
        ],
    )
    return m, decode_private(private_doc(), "test manifest")


def private_doc() -> dict[str, Any]:
    from vkbackup.facts import compose_projects

    containers = CONTAINERS
    objects = OBJECTS
    return {
        "facts": {"containers": containers, "compose_projects": compose_projects(containers)},
        "sources": {
            "db": {
                "type": "postgres",
                "meta": {
                    "container": "chatwoot-postgres-1",
                    "database": "chatwoot_production",
                    "user": "postgres",
                    "server": {"major": 15},
                    "row_counts": {"public.accounts": 3},
                },
            },
            "secrets": {
                "type": "files",
                "meta": {"files": [{"path": "/opt/chatwoot/.env"}], "patterns": ["/opt/*/.env"]},
            },
            "storage": {
                "type": "docker-volume",
                "meta": {"volume": "chatwoot_storage_data", "labels": "{}"},
            },
            "images": {"type": "docker-image", "meta": {}},
            "broken": {"type": "files", "meta": {}},
        },
        "objects": {objects[4].key: {"refs": ["platform-api:latest"]}},
    }


def test_derived_order_without_playbook() -> None:
    m, priv = lab_like()
    plan = derive_plan(m, priv, Playbook())
    ids = [s.id for s in plan.steps]
    assert ids[:2] == ["preflight", "ensure-docker"]
    # data before services; the database container starts right before its restore
    assert ids.index("files:secrets") < ids.index("image:images")
    assert ids.index("volume:storage") < ids.index("start:chatwoot:postgres")
    assert ids.index("start:chatwoot:postgres") == ids.index("database:db") - 1
    starts = [s for s in plan.steps if s.kind == "start"]
    # the database's project first, the edge proxy (caddy) last
    assert par(starts[1]).project == "chatwoot"
    assert par(starts[-1]).project == "caddy"
    assert ids[-2:] == ["health", "dns"]
    health = par(plan.steps[-2])
    assert "hand-made" not in health.containers
    assert "platform-api" in health.containers
    assert list(health.healthchecked) == ["chatwoot-chatwoot-sidekiq-1"]
    assert any("hand-made" in w for w in plan.warnings)
    assert any("broken" in w for w in plan.warnings)
    db = next(s for s in plan.steps if s.kind == "database")
    assert par(db).major == 15 and dict(par(db).row_counts) == {"public.accounts": 3}
    assert {o.role for o in db.objects} == {"pg-dump", "pg-globals"}
    assert all(par(s).working_dir for s in starts)


def test_visualkit_playbook_refines_order() -> None:
    m, priv = lab_like()
    book = load_playbook(REPO / "restore-playbooks" / "visualkit.toml")
    assert book.dns_records == ("api", "agent", "janus", "cdn", "support")
    assert book.dns_zone == "visualkit.live"
    plan = derive_plan(m, priv, book)
    starts = [s.id for s in plan.steps if s.kind == "start"]
    assert starts == [
        "start:chatwoot:postgres",
        "start:chatwoot:redis",
        "start:chatwoot:chatwoot,chatwoot-sidekiq",
        "start:platform-api:platform-api",
        "start:caddy:caddy",
    ]
    # vk-agent and janus are named by the playbook but absent from this snapshot
    assert any("'vk-agent'" in w for w in plan.warnings)
    assert any("chatwoot-proxy" in w for w in plan.warnings)  # not in this snapshot
    http = par(plan.steps[-2]).http
    assert len(http) == 9
    # every public name is checked through Caddy, verified against the restored CA
    https = [h for h in http if h.url.startswith("https://")]
    assert sorted(h.name.split(".")[0] for h in https) == [
        "agent",
        "api",
        "cdn",
        "janus",
        "support",
    ]
    assert all(h.ca and h.ca.endswith("/root.crt") for h in https)


def test_only_filters_steps_but_keeps_preflight() -> None:
    m, priv = lab_like()
    plan = derive_plan(m, priv, Playbook()).only(("storage",))
    # a volume needs Docker: a bare target gets it first
    assert [s.id for s in plan.steps] == ["preflight", "ensure-docker", "volume:storage"]
    plan = derive_plan(m, priv, Playbook()).only(("secrets",))
    assert [s.id for s in plan.steps] == ["preflight", "files:secrets"]


def test_playbook_errors_name_key_path() -> None:
    with pytest.raises(ConfigError, match=r"pb.toml: start\[0\].project: is required"):
        parse_playbook({"start": [{"services": ["a"]}]}, "pb.toml")
    with pytest.raises(ConfigError, match=r"pb.toml: health\[0\].url: must be an http"):
        parse_playbook({"health": [{"url": "ftp://x"}]}, "pb.toml")
    with pytest.raises(ConfigError, match=r"pb.toml: dns.recods: unknown key"):
        parse_playbook({"dns": {"recods": []}}, "pb.toml")


def test_caddy_sites() -> None:
    text = """{
    email ops@x.test
}
api.visualkit.test, cdn.visualkit.test {
    reverse_proxy 127.0.0.1:8000
}
# support.old.test {
https://support.visualkit.test:443 {
    handle {
        reverse_proxy 127.0.0.1:3000
    }
}
(snippet) {
   header x y
}
"""
    assert caddy_sites(text) == [
        "api.visualkit.test",
        "cdn.visualkit.test",
        "support.visualkit.test",
    ]


def with_host() -> tuple[Manifest, PrivatePart]:
    """lab_like plus a host source (Docker from Debian's packages, daemon.json among
    its files) and a second image archive that holds the database's image."""
    from dataclasses import replace

    m, _ = lab_like()
    m = replace(
        m,
        objects=[*m.objects, obj("host", "host.tar.gz.age", "tar"),
                 obj("db-images", "images.tar.gz.age", "image")],
        sources=[*m.sources, SourceRecord("host", "host", "ok"),
                 SourceRecord("db-images", "docker-image", "ok")],
    )  # fmt: skip
    doc = private_doc()
    doc["sources"]["host"] = {
        "type": "host",
        "meta": {
            "packages": [{"name": n, "version": "1", "arch": "amd64"}
                         for n in ("docker.io", "containerd", "caddy", "ufw")],
            "units": ["caddy.service"],
            "firewall": {"kind": "ufw", "active": True, "status": "Status: active"},
            "members": [{"path": "/etc/apt/sources.list"}, {"path": "/etc/docker/daemon.json"},
                        {"path": "/etc/caddy/Caddyfile"}],
            "restart": ["caddy"],
        },
    }  # fmt: skip
    doc["sources"]["db-images"] = {"type": "docker-image", "meta": {}}
    doc["objects"][m.objects[-1].key] = {"refs": ["postgres:15-lab"]}
    return m, decode_private(doc, "test manifest")


def test_each_step_waits_for_what_it_needs_and_no_more() -> None:
    from vkbackup.restore.runner import check_order

    m, priv = with_host()
    plan = derive_plan(m, priv, Playbook())
    check_order(plan.steps)  # the plan's order is one the steps can run in
    after = {s.id: set(s.after) for s in plan.steps}
    ids = [s.id for s in plan.steps]
    pre = {"preflight"}
    assert after["preflight"] == set()
    assert after["host-packages:host:docker"] == pre
    assert after["host-packages:host"] == pre | {"host-packages:host:docker"}
    # accounts before the other packages: a package keeps the system user it finds
    assert after["host-users:host"] == pre | {"host-packages:host:docker"}
    # daemon.json may name a group: Docker's configuration after the accounts
    assert after["host-files:host:docker"] == pre | {"host-packages:host:docker",
                                                     "host-users:host"}  # fmt: skip
    # Docker needs its packages and its daemon.json, not the other packages or /etc
    assert after["ensure-docker"] == pre | {"host-packages:host:docker", "host-files:host:docker"}
    packages = {"host-packages:host:docker", "host-packages:host"}
    assert after["host-files:host"] == pre | packages | {"host-users:host",
                                                         "host-files:host:docker"}  # fmt: skip
    # so images and volumes stream while the rest of the packages install
    for streamed in ("image:images", "image:db-images", "volume:storage"):
        assert after[streamed] == pre | {"ensure-docker"}
    hfiles = {"host-files:host", "host-files:host:docker"}
    assert after["files:secrets"] == pre | hfiles
    # the database's container needs only the archive holding its own image
    db_start = "start:chatwoot:postgres"
    # (and the volumes it mounts: chatwoot_storage_data is the app's, not its)
    assert after[db_start] == pre | {"ensure-docker", "files:secrets", "image:db-images"}
    # ... and only it: its depends_on services' images may not be in yet
    db_start_step = next(x for x in plan.steps if x.id == db_start)
    assert par(db_start_step).no_deps
    data = {"files:secrets", "volume:storage", "image:images", "image:db-images"}
    assert after["database:db"] == pre | {"ensure-docker", db_start}
    # apps start once every piece of data is in, the database included, one at a
    # time in plan order (projects may share a named network), the edge proxy last
    starts = [i for i in ids if i.startswith("start:")]
    assert starts[0] == db_start and starts[-1] == "start:caddy:caddy"
    for n, start in enumerate(starts[1:], 1):
        assert after[start] == pre | data | {"ensure-docker", "database:db", *starts[:n]}
        assert not par(next(x for x in plan.steps if x.id == start)).no_deps
    # Caddy's unit needs its files, not the apps behind it
    assert after["host-services:host"] == pre | hfiles | {"ensure-docker", "files:secrets"}
    # the firewall, health and DNS wait for everything before them
    fw = ids.index("host-firewall:host")
    assert after["host-firewall:host"] == set(ids[:fw])
    assert after["health"] == set(ids[: ids.index("health")])
    assert after["dns"] == set(ids[: ids.index("dns")])


def test_a_host_tar_without_docker_config_has_no_such_step() -> None:
    from dataclasses import replace

    from vkbackup.sources import host

    m, priv = with_host()
    hostmeta = priv.sources["host"].meta
    assert isinstance(hostmeta, host.Meta)

    priv.sources["host"] = replace(
        priv.sources["host"],
        meta=replace(hostmeta, members=tuple(x for x in hostmeta.members if "docker" not in x)),
    )
    plan = derive_plan(m, priv, Playbook())
    assert "host-files:host:docker" not in [s.id for s in plan.steps]
    ensure = next(s for s in plan.steps if s.kind == "ensure-docker")
    assert set(ensure.after) == {"preflight", "host-packages:host:docker"}


def test_the_playbook_start_groups_go_one_after_the_other() -> None:
    m, priv = lab_like()
    book = load_playbook(REPO / "restore-playbooks" / "visualkit.toml")
    plan = derive_plan(m, priv, book)
    starts = [s for s in plan.steps if s.kind == "start"]
    for before, later in itertools.pairwise(starts):
        assert before.id in later.after, (before.id, later.id)


def test_the_database_container_waits_for_the_volumes_it_mounts_or_all_if_unknown() -> None:
    m, priv = with_host()
    db = priv.facts.container("chatwoot-postgres-1")
    assert db is not None and db.volumes == ("pgdata",)
    from dataclasses import replace

    def db_start_after(volumes: tuple[str, ...] | None) -> set[str]:
        c = replace(db, volumes=volumes)
        facts = replace(priv.facts, containers=tuple(c if x is db else x
                                                     for x in priv.facts.containers))  # fmt: skip
        plan = derive_plan(m, replace(priv, facts=facts), Playbook())
        step = next(s for s in plan.steps if s.id == "start:chatwoot:postgres")
        return set(step.after)

    assert "volume:storage" not in db_start_after(("pgdata",))
    assert "volume:storage" in db_start_after(("chatwoot_storage_data",))  # it mounts it
    assert "volume:storage" in db_start_after(None)  # an older record: every volume
