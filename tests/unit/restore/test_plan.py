"""Restore plan derivation (pure) and playbook parsing."""

from __future__ import annotations

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


def container(name: str, project: str | None, service: str, image: str = "x") -> dict[str, Any]:
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
    }


def par(step: Step) -> Any:
    """A step's typed parameters, for attribute access in assertions."""
    return step.params


def lab_like() -> tuple[Manifest, PrivatePart]:
    from vkbackup.facts import compose_projects

    containers = [
        container("chatwoot-postgres-1", "chatwoot", "postgres", "postgres:15-lab"),
        container("chatwoot-redis-1", "chatwoot", "redis"),
        container("chatwoot-chatwoot-1", "chatwoot", "chatwoot"),
        container("chatwoot-chatwoot-sidekiq-1", "chatwoot", "chatwoot-sidekiq"),
        container("platform-api", "platform-api", "platform-api"),
        container("caddy", "caddy", "caddy", "caddy:lab"),
        container("hand-made", None, ""),
    ]
    objects = [
        obj("db", "dump.pgdump.age", "pg-dump"),
        obj("db", "globals.sql.age", "pg-globals"),
        obj("secrets", "files.tar.gz.age", "tar"),
        obj("storage", "volume.tar.gz.age", "tar"),
        obj("images", "images.tar.gz.age", "image"),
    ]
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
    private = {
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
    return m, decode_private(private, "test manifest")


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


def test_consecutive_image_and_volume_steps_form_one_concurrent_group() -> None:
    from vkbackup.restore import steps as st
    from vkbackup.restore.runner import step_groups as data_step_groups

    params: dict[str, st.StepParams] = {
        "preflight": st.PreflightParams(), "ensure-docker": st.EnsureDockerParams(),
        "files": st.FilesParams(), "image": st.ImageParams(), "volume": st.VolumeParams(),
        "start": st.StartParams(), "database": st.DatabaseParams(), "health": st.HealthParams(),
    }  # fmt: skip
    kinds = ["preflight", "ensure-docker", "files", "files", "image", "volume", "volume",
             "start", "database", "image", "start", "health"]  # fmt: skip
    steps = [Step(f"{k}:{i}", k, params[k]) for i, k in enumerate(kinds)]
    groups = [[s.kind for s in g] for g in data_step_groups(steps)]
    assert groups == [
        ["preflight"], ["ensure-docker"], ["files"], ["files"],
        ["image", "volume", "volume"], ["start"], ["database"], ["image"], ["start"],
        ["health"],
    ]  # fmt: skip
    assert [s for g in data_step_groups(steps) for s in g] == steps  # order kept
