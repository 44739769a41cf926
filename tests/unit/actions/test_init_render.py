"""`init` writes names a host chose into a config: they must stay data. A name with
a newline, a quote, a backslash or any control character must come back from the
TOML parser as exactly that name, in exactly the keys init meant to write, and
never add a key of its own (issue 16, finding 4)."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from vkbackup.actions.init import (
    Database,
    Discovery,
    render_config,
    toml_comment,
    toml_key,
    toml_str,
)
from vkbackup.config import parse_config
from vkbackup.config.model import HostConfig

INJECT = "\nretention.keep_last = 1\n"
HOSTILE = [
    "pg" + INJECT,
    "pg" + INJECT + "#",  # the rest of the comment line stays a comment
    'a"b\\c' + INJECT,
    "x\r\nwebhook_url = 'http://evil'\n",
    "bell\x07esc\x1b[2Jdel\x7fnul\x00c1\x85\x9b",
    "tab\tvt\x0bff\x0cbs\x08",
    "line\u2028sep\u2029bidi\u202e",
    "emoji \U0001f600 and é",
    "# not a comment\n[hosts.evil]\naddress = '1.2.3.4'",
    "'''\n\"\"\"\n]",
]

STORAGE = '[storage]\ntype = "local"\npath = "/srv/b"'
ENCRYPTION = '[encryption]\nrecipients = ["age1' + "q" * 58 + '"]'


@pytest.mark.parametrize("name", HOSTILE)
def test_toml_str_reads_back_exactly(name: str) -> None:
    assert tomllib.loads(f"k = {toml_str(name)}") == {"k": name}
    assert tomllib.loads(f"{toml_key(name)} = 1") == {name: 1}
    line = toml_comment(f"volume {name} here")
    assert "\n" not in line and "\r" not in line
    assert tomllib.loads(f"{line}\nk = 1\n") == {"k": 1}


def test_lone_surrogate_becomes_a_replacement_character() -> None:
    odd = "a\udcffb"
    assert tomllib.loads(f"k = {toml_str(odd)}") == {"k": "a\ufffdb"}


def hostile_discovery(h: str) -> Discovery:
    return Discovery(
        facts={},
        env_files=[f"/srv/{h}/.env"],
        compose_files=[f"/srv/{h}/compose.yml"],
        volumes={h: [h, "web"], "pgdata" + h: [h]},
        pg_data_volumes={"pgdata" + h},
        databases=[Database(container=h, user=h, databases=[h])],
        local_images=[h],
        registry_images=["nginx" + h],
    )


@pytest.mark.parametrize("h", HOSTILE)
def test_discovered_names_cannot_add_keys(h: str) -> None:
    host = HostConfig(name="prod", address="203.0.113.7")
    text = render_config("prod", host, hostile_discovery(h), STORAGE, ENCRYPTION)
    doc = tomllib.loads(text)  # parses at all: no name broke the syntax
    assert set(doc) == {"storage", "encryption", "hosts"}
    assert set(doc["hosts"]) == {"prod"}
    prod = doc["hosts"]["prod"]
    assert set(prod) == {"address", "port", "user", "known_hosts", "sources"}
    sources: list[dict[str, Any]] = prod["sources"]
    want_keys = {
        "postgres": {"type", "name", "container", "database", "user"},
        "files": {"type", "name", "paths", "secret"},
        "docker-volume": {"type", "name", "volume", "stop", "quiesce"},
        "docker-image": {"type", "name", "images"},
    }
    for s in sources:
        want = set(want_keys[s["type"]])
        if s["type"] == "files" and "secret" not in s:
            want.discard("secret")
        assert set(s) == want, s
    by_type = {(s["type"], s["name"]): s for s in sources}
    pg = next(s for s in sources if s["type"] == "postgres")
    assert (pg["container"], pg["database"], pg["user"]) == (h, h, h)
    secrets = by_type[("files", "secrets")]
    assert secrets["paths"] == [f"/srv/{h}/.env"] and secrets["secret"] is True
    assert by_type[("files", "config")]["paths"] == [f"/srv/{h}/compose.yml"]
    vols = [s for s in sources if s["type"] == "docker-volume"]
    assert [(v["volume"], v["stop"]) for v in vols] == [(h, sorted({h, "web"}))]
    images = next(s for s in sources if s["type"] == "docker-image")
    assert images["images"] == [h, "nginx" + h]
    # every line a comment or a piece of TOML: nothing of a name begins a line
    for line in text.splitlines():
        assert not line.startswith(("retention", "webhook_url", "[hosts.evil]", "address = '"))


def test_a_volume_redis_uses_is_stopped_the_others_paused() -> None:
    """Redis writes a fresh dump on shutdown: its volume gets quiesce = "stop"; every
    other volume an explicit quiesce = "pause", each with a comment saying why."""
    d = Discovery(
        facts={},
        volumes={"cache": ["redis-1", "web"], "uploads": ["web"], "tagged": ["app"]},
        images={
            "redis-1": "docker.io/bitnami/redis:7.2@sha256:" + "a" * 64,
            "web": "nginx:1.27",
            "app": "app:redis-fix",  # a tag names no Redis
        },
    )
    host = HostConfig(name="prod", address="203.0.113.7")
    text = render_config("prod", host, d, STORAGE, ENCRYPTION)
    vols = {s["volume"]: s for s in tomllib.loads(text)["hosts"]["prod"]["sources"]}
    assert {v: s["quiesce"] for v, s in vols.items()} == {
        "cache": "stop",
        "uploads": "pause",
        "tagged": "pause",
    }
    assert "# stopped while it is copied: redis-1 runs Redis" in text
    assert text.count("# paused while it is copied") == 2
    cfg = parse_config(tomllib.loads(text), "init.toml")  # and the loader takes it
    assert [s.quiesce for s in cfg.hosts["prod"].sources] == ["stop", "pause", "pause"]
