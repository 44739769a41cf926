"""The config loader checks every container, volume, image, database and role name
against Docker's and PostgreSQL's rules (vkbackup.names), and the error names the
file and the exact key path (issue 16: names are data, never code)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.lab import prod as lab_prod
from tests.lab import vkconfig as lab_vkconfig
from vkbackup.config import parse_config
from vkbackup.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "vkbackup.toml"

HOSTILE = [
    "pg$(touch /tmp/x)",
    "pg\nretention.keep_last = 1",
    "a'b",
    "a`id`",
    "a b",
    "-rf",
    "..",
    "a\x00b",
    "ch\u0430twoot",
    "x" * 300,
]


def example() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text())


def source_index(doc: dict[str, Any], typ: str) -> int:
    return next(i for i, s in enumerate(doc["hosts"]["prod"]["sources"]) if s["type"] == typ)


def refused(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(doc, "cfg.toml")
    msg = str(exc.value)
    assert msg.isascii() and msg.isprintable()  # the bad name is shown inertly
    return msg


# (source type, key, list index or None, what the error calls it)
FIELDS = [
    ("postgres", "container", None, "Docker container name"),
    ("postgres", "database", None, "PostgreSQL database name"),
    ("postgres", "user", None, "PostgreSQL role name"),
    ("docker-volume", "volume", None, "Docker volume name"),
    ("docker-volume", "stop", 1, "Docker container name"),
    ("docker-image", "images", 2, "Docker image reference"),
]


@pytest.mark.parametrize("bad", HOSTILE)
@pytest.mark.parametrize(("typ", "key", "index", "kind"), FIELDS)
def test_a_hostile_name_is_refused_with_its_key_path(
    typ: str, key: str, index: int | None, kind: str, bad: str
) -> None:
    doc = example()
    i = source_index(doc, typ)
    src = doc["hosts"]["prod"]["sources"][i]
    if index is None:
        src[key] = bad
        path = f"hosts.prod.sources[{i}].{key}"
    else:
        src[key][index] = bad
        path = f"hosts.prod.sources[{i}].{key}[{index}]"
    msg = refused(doc)
    assert msg.startswith(f"cfg.toml: {path}: not a valid {kind}: ")


def test_the_default_role_is_accepted() -> None:
    doc = example()
    i = source_index(doc, "postgres")
    del doc["hosts"]["prod"]["sources"][i]["user"]
    cfg = parse_config(doc, "cfg.toml")
    assert cfg.hosts["prod"].sources[i].user == "postgres"


def test_example_names_come_through_unchanged() -> None:
    cfg = parse_config(example(), "cfg.toml")
    by_type = {s.type: s for s in cfg.hosts["prod"].sources}
    pg = by_type["postgres"]
    assert (pg.container, pg.database, pg.user) == (
        "chatwoot-postgres-1",
        "chatwoot_production",
        "postgres",
    )
    volumes = [s.volume for s in cfg.hosts["prod"].sources if s.type == "docker-volume"]
    assert volumes == ["chatwoot_storage_data", "chatwoot_redis_data"]
    assert by_type["docker-image"].images == (
        "platform-api:latest",
        "vk-agent:latest",
        "janus-gateway:latest",
    )


def test_the_lab_sources_load() -> None:
    """Every name the lab's own config uses passes the rules."""
    doc = {"hosts": {"prod": {"address": "127.0.0.1", "sources": lab_vkconfig.SOURCES}}}
    cfg = parse_config(doc, "lab.toml")
    sources = {s.name: s for s in cfg.hosts["prod"].sources}
    assert sources["chatwoot-db"].container == "chatwoot-postgres-1"
    assert sources["chatwoot-storage"].stop == (
        "chatwoot-chatwoot-1",
        "chatwoot-chatwoot-sidekiq-1",
    )
    assert sources["images"].images == tuple(lab_prod.IMAGES)


def test_database_names_libpq_would_read_as_a_connection_string_are_refused() -> None:
    doc = example()
    i = source_index(doc, "postgres")
    doc["hosts"]["prod"]["sources"][i]["database"] = "host=evil.example dbname=x"
    msg = refused(doc)
    assert msg.startswith(f"cfg.toml: hosts.prod.sources[{i}].database: not a valid ")
    assert "'host=evil.example dbname=x'" in msg
