"""`init` discovery meets names a host chose: one that breaks Docker's or
PostgreSQL's rules is skipped with a warning naming it, never run through a
command and never written to the config; every good name still is (issue 16:
names are data, never code)."""

from __future__ import annotations

import json
import logging
import tomllib
from typing import Any

import pytest

from vkbackup.actions.init import discover, render_config
from vkbackup.config import parse_config
from vkbackup.config.model import HostConfig
from vkbackup.facts import FACTS_SCRIPT
from vkbackup.streams import Readable
from vkbackup.transport.base import Completed, Process

BAD_CONTAINER = "pg$(touch /tmp/x)"
BAD_VOLUME = "-rf"
BAD_DATABASE = "host=evil.example dbname=x"
BAD_IMAGE = "Evil Image:latest"
BAD_ROLE_CONTAINER = "other-postgres-1"
BAD_ROLE = "$(id)-postgres"  # discovery reads it as one line of the env
BAD = [BAD_CONTAINER, BAD_VOLUME, BAD_DATABASE, BAD_IMAGE, "evil_shared", "bad'db", "bad db"]


def inspect(
    name: str, image: str, mounts: list[tuple[str, str]], project: str = "chatwoot"
) -> dict[str, Any]:
    return {
        "Name": "/" + name,
        "Image": "sha256:" + "0" * 64,
        "Config": {
            "Image": image,
            "Labels": {
                "com.docker.compose.project": project,
                "com.docker.compose.service": name.split("-")[1] if "-" in name else name,
            },
        },
        "State": {"Running": True},
        "Mounts": [
            {"Type": "volume", "Name": vol, "Destination": dest, "RW": True} for vol, dest in mounts
        ],
    }


CONTAINERS = [
    inspect(
        "chatwoot-postgres-1",
        "postgres:15-alpine",
        [("chatwoot_postgres_data", "/var/lib/postgresql/data")],
    ),
    inspect(
        "chatwoot-chatwoot-1",
        "ghcr.io/chatwoot/chatwoot:v3.13.0",
        [("chatwoot_storage_data", "/app/storage"), (BAD_VOLUME, "/tmp/x")],
    ),
    # a container whose name Docker would never make, sharing a volume with a good one
    inspect(BAD_CONTAINER, "redis:7", [("evil_shared", "/data")]),
    inspect("chatwoot-redis-1", "redis:7", [("evil_shared", "/data")]),
    inspect("platform-api", BAD_IMAGE, [], project="platform-api"),
    inspect(BAD_ROLE_CONTAINER, "postgres:16", [], project="other"),
]

USERS = {"chatwoot-postgres-1": "postgres", BAD_ROLE_CONTAINER: BAD_ROLE}
NEWLINE_DB = "vk\nretention.keep_last = 1"
DATABASES = {
    "chatwoot-postgres-1": ["chatwoot_production", BAD_DATABASE, "bad'db", "bad db", NEWLINE_DB]
}


class FakeHost:
    """A Transport answering discovery's commands from the tables above; every argv
    run is recorded."""

    def __init__(self) -> None:
        self.ran: list[list[str]] = []

    @property
    def name(self) -> str:
        return "root@203.0.113.7:22"

    def _answer(self, script: str) -> str:
        if FACTS_SCRIPT.strip() in script:
            return "== compose\nv2 2.27.0\n== containers\n" + json.dumps(CONTAINERS)
        for container, user in USERS.items():
            if f"' {container} | sed -n 's/^POSTGRES_USER=//p'" in script:
                return user + "\n"
            if f"' {container} | cut -d= -f1" in script:
                return "PG_VERSION\nPOSTGRES_USER\n"
        for container, dbs in DATABASES.items():
            if script.startswith(f"docker exec -i {container} psql"):
                assert "to_json(datname)" in script
                return "".join(json.dumps(db) + "\n" for db in dbs)  # as psql -A -t prints
        if "docker image inspect" in script:
            return "[]\n"
        return ""

    def run(
        self,
        argv: list[str],
        *,
        input: bytes = b"",
        check: bool = True,
        timeout: float | None = None,
    ) -> Completed:
        self.ran.append(argv)
        script = argv[2].removeprefix("set -euo pipefail\n") if argv[:2] == ["bash", "-c"] else ""
        return Completed(argv, 0, self._answer(script).encode(), "")

    def start(self, argv: list[str]) -> Process:
        raise AssertionError("discovery only runs small commands")

    def feed(self, argv: list[str], src: Readable) -> Completed:
        raise AssertionError("discovery feeds nothing")

    def close(self) -> None:
        return None


@pytest.fixture
def found(caplog: pytest.LogCaptureFixture) -> tuple[Any, FakeHost, list[str]]:
    host = FakeHost()
    with caplog.at_level(logging.WARNING, logger="vkbackup"):
        d = discover(host)
    return d, host, [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_good_names_are_discovered(found: tuple[Any, FakeHost, list[str]]) -> None:
    d, _, _ = found
    assert d.volumes == {
        "chatwoot_postgres_data": ["chatwoot-postgres-1"],
        "chatwoot_storage_data": ["chatwoot-chatwoot-1"],
    }
    assert d.pg_data_volumes == {"chatwoot_postgres_data"}
    # each named container's image, for quiesce = "stop" on a Redis volume
    assert d.images["chatwoot-redis-1"] == "redis:7"
    assert BAD_CONTAINER not in d.images
    assert [(db.container, db.user, db.databases) for db in d.databases] == [
        ("chatwoot-postgres-1", "postgres", ["chatwoot_production"])
    ]
    assert sorted(d.local_images) == [
        "ghcr.io/chatwoot/chatwoot:v3.13.0",
        "postgres:15-alpine",
        "postgres:16",
        "redis:7",
    ]


def test_each_bad_name_is_skipped_with_a_warning_naming_it(
    found: tuple[Any, FakeHost, list[str]],
) -> None:
    _, _, warnings = found
    text = "\n".join(warnings)
    host = "root@203.0.113.7:22"
    db = "container chatwoot-postgres-1: database: not a valid PostgreSQL database name:"
    expect = [
        f"{host}: container: not a valid Docker container name: 'pg$(touch /tmp/x)'",
        f"{host}: volume: not a valid Docker volume name: '-rf'",
        f"{host}: volume 'evil_shared': used by a container whose name was skipped: skipped too",
        f"{db} 'host=evil.example dbname=x'",
        f'{db} "bad\'db"',
        f"{db} 'bad db'",
        f"{db} 'vk\\nretention.keep_last = 1'",  # one name, not two lines
        f"container {BAD_ROLE_CONTAINER}: POSTGRES_USER: not a valid PostgreSQL role name: "
        "'$(id)-postgres'",
        f"{host}: container image: not a valid Docker image reference: 'Evil Image:latest'",
    ]
    for fragment in expect:
        assert text.count(fragment) == 1, fragment
    assert len(warnings) == len(expect)
    for w in warnings:
        assert w.isprintable(), w  # a hostile name cannot forge a second log line
        ends = ("skipped, not written to the config", "skipped too", "left out of the host facts")
        assert w.endswith(ends), w


def test_no_command_is_built_from_a_bad_name(found: tuple[Any, FakeHost, list[str]]) -> None:
    _, host, _ = found
    commands = [" ".join(argv) for argv in host.ran]
    assert commands  # discovery did run
    for argv in commands:
        for bad in (BAD_CONTAINER, BAD_IMAGE, BAD_ROLE):
            assert bad not in argv
    # the container with a bad role was looked at (its env) but never queried
    assert not any(f"docker exec -i {BAD_ROLE_CONTAINER}" in c for c in commands)


def test_the_generated_config_holds_only_good_names_and_loads(
    found: tuple[Any, FakeHost, list[str]],
) -> None:
    d, _, _ = found
    host = HostConfig(name="prod", address="203.0.113.7")
    storage = '[storage]\ntype = "local"\npath = "/srv/b"'
    encryption = '[encryption]\nrecipients = ["age1' + "q" * 58 + '"]'
    text = render_config("prod", host, d, storage, encryption)
    cfg = parse_config(tomllib.loads(text), "<generated>")  # init's own last check
    sources = cfg.hosts["prod"].sources
    names = {
        *(s.container for s in sources),
        *(s.database for s in sources),
        *(s.volume for s in sources),
        *(c for s in sources for c in s.stop or ()),
        *(i for s in sources for i in s.images),
    }
    assert names >= {"chatwoot-postgres-1", "chatwoot_production", "chatwoot_storage_data"}
    assert "vk" not in names  # the first line of a name with a newline is not a name
    for bad in [*BAD, BAD_ROLE, NEWLINE_DB]:
        assert bad not in names
        assert bad not in text
