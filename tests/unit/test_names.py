"""Names are data, never code (issue 16): every name rule in `vkbackup.names` refuses
hostile names with an error that names where the name came from and prints it
inertly, and accepts every name the lab (a VisualKit-like production host) and
ordinary Docker and PostgreSQL installations really use."""

from __future__ import annotations

import shlex
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.lab import database as lab_database
from tests.lab import prod as lab_prod
from vkbackup import names
from vkbackup.errors import ConfigError, IntegrityError

Check = Callable[..., str]

CHECKS: dict[str, Check] = {
    "container": names.check_container,
    "volume": names.check_volume,
    "image": names.check_image,
    "project": names.check_project,
    "service": names.check_service,
    "database": names.check_database,
    "role": names.check_role,
}

# refused by every rule: shell syntax, options, paths, control characters,
# lookalikes, the empty name and an overlong one
HOSTILE = [
    "pg$(touch /tmp/x)",
    "$(id)",
    "a`id`",
    "db;rm -rf /",
    "a|b",
    "a&b",
    "a>b",
    "pg\nretention.keep_last = 1",
    "pg\r",
    "pg\n",  # a trailing newline: `$` would let it through, fullmatch does not
    "a\tb",
    "a'b",
    'a"b',
    "a b",
    " pg",
    "-rf",
    "--help",
    "..",
    ".",
    "a\x00b",
    "\x00",
    "esc\x1b[2Jx",
    "del\x7fx",
    "c1\x9bx",
    "bidi\u202eevil",
    "ch\u0430twoot",  # Cyrillic a
    "\uff50\uff4f\uff53\uff54\uff47\uff52\uff45\uff53",  # fullwidth "postgres"
    "postgres\u200b",  # zero-width space
    "caf\u00e9",
    "",
    "x" * 10_000,
    "a\\b",
    "a*b",
    "a?b",
    "~root",
    "a{b,c}",
    "a=b",
    "a,b",
]


@pytest.mark.parametrize("kind", sorted(CHECKS))
@pytest.mark.parametrize("name", HOSTILE)
def test_every_rule_refuses_hostile_names(kind: str, name: str) -> None:
    with pytest.raises(ConfigError) as exc:
        CHECKS[kind](name, "cfg.toml: hosts.prod.sources[0].x")
    msg = str(exc.value)
    assert msg.startswith("cfg.toml: hosts.prod.sources[0].x: not a valid ")
    # the bad name is shown, but inert: one line of printable ASCII, bounded
    assert msg.isascii() and msg.isprintable()
    assert len(msg) < 400
    assert names.shown(name) in msg


@pytest.mark.parametrize("kind", sorted(CHECKS))
def test_the_callers_error_class_is_raised(kind: str) -> None:
    with pytest.raises(IntegrityError) as exc:
        CHECKS[kind]("-rf", "snapshots/prod/x.json: sources.db.meta.x", IntegrityError)
    assert str(exc.value).startswith("snapshots/prod/x.json: sources.db.meta.x: not a valid ")
    assert "'-rf'" in str(exc.value)


def test_shown_escapes_and_cuts() -> None:
    assert names.shown("pg\n\x1b[2J") == "'pg\\n\\x1b[2J'"
    assert names.shown("ch\u0430twoot") == "'ch\\u0430twoot'"
    assert names.shown("a\u202eb") == "'a\\u202eb'"
    long = names.shown("y" * 5000)
    assert long.startswith("'" + "y" * 80 + "'") and long.endswith("... (5000 characters)")
    assert names.shown("platform-api") == "'platform-api'"


def test_kinds_are_named_in_errors() -> None:
    kinds = {
        "container": "Docker container name",
        "volume": "Docker volume name",
        "image": "Docker image reference",
        "project": "compose project name",
        "service": "compose service name",
        "database": "PostgreSQL database name",
        "role": "PostgreSQL role name",
    }
    for kind, title in kinds.items():
        with pytest.raises(ConfigError, match=f"not a valid {title}: "):
            CHECKS[kind]("-x", "w")


# -- what real hosts use ----------------------------------------------------------------


LAB_CONTAINERS = sorted(lab_prod.CONTAINERS)
LAB_VOLUMES = sorted(lab_prod.VOLUMES)


@pytest.mark.parametrize(
    "name",
    [
        *LAB_CONTAINERS,
        "chatwoot-chatwoot-1",
        "chatwoot_web_1",  # Compose v1 names
        "Caddy",
        "web.1",
        "my_app-db.2",
        "a0",
        "3f57d9401f8d",
        "x" * 255,
    ],
)
def test_real_container_names_pass(name: str) -> None:
    assert names.check_container(name, "w") == name


@pytest.mark.parametrize("name", ["a", "x" * 256, "_x", "/platform-api", "platform-api/"])
def test_docker_refuses_these_container_names_too(name: str) -> None:
    with pytest.raises(ConfigError):
        names.check_container(name, "w")


@pytest.mark.parametrize(
    "name",
    [
        *LAB_VOLUMES,
        "chatwoot_postgres_data",
        "caddy_data",
        "my-app.cache",
        "a" * 64,  # an anonymous volume: 64 hex digits
        "0123456789abcdef" * 4,
    ],
)
def test_real_volume_names_pass(name: str) -> None:
    assert names.check_volume(name, "w") == name


@pytest.mark.parametrize("name", ["v", "x" * 256, "_data", "a/b", "../etc"])
def test_docker_refuses_these_volume_names_too(name: str) -> None:
    with pytest.raises(ConfigError):
        names.check_volume(name, "w")


DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "ref",
    [
        *lab_prod.IMAGES,
        "postgres",
        "postgres:15-alpine",
        "pgvector/pgvector:pg16",
        "chatwoot/chatwoot:v3.13.0",
        "ghcr.io/chatwoot/chatwoot:latest",
        "ghcr.io/owner/repo/sub-image:1.2.3",
        "docker.io/library/redis:7.2.4-alpine",
        "registry.example.com:5000/team/app:2024.01.02_rc1",
        "localhost:5000/app",
        "localhost/app:dev",
        "127.0.0.1:5000/app:x",
        "[::1]:5000/app:dev",
        "MyRegistry.Example.com/app",  # a registry host may have capitals
        f"postgres@{DIGEST}",
        f"postgres:15@{DIGEST}",
        f"ghcr.io/a/b:c@{DIGEST}",
        "sha256:" + "a" * 64,  # an image ID, as Config.Image may hold it
        "3f57d9401f8d",  # a short image ID
        "a.b",
        "a_b",
        "a__b",
        "a---b",
        "app:Tag_With.Caps-1",
        "app:" + "t" * 128,
        "a/" * 120 + "b",
    ],
)
def test_real_image_references_pass(ref: str) -> None:
    assert names.check_image(ref, "w") == ref


@pytest.mark.parametrize(
    "ref",
    [
        "Postgres",  # uppercase path
        "chatwoot/Chatwoot:latest",
        "postgres:",
        ":15",
        "postgres:-x",
        "postgres:.x",
        "postgres:" + "t" * 129,
        "a//b",
        "/postgres",
        "postgres/",
        "ghcr.io/",
        "a___b",
        "a_.b",
        "-a",
        "a-",
        "a@sha256:abc",  # too short a digest
        "a@" + DIGEST + "x",
        "a:b:c",
        "-registry.io/app",
        "registry-.io/app",
        "a/" * 130 + "b",  # the name part over 255
        "postgres:15 --privileged",
    ],
)
def test_bad_image_references_are_refused(ref: str) -> None:
    with pytest.raises(ConfigError, match="not a valid Docker image reference"):
        names.check_image(ref, "w")


@pytest.mark.parametrize("name", [*lab_prod.PROJECTS, "my_app", "2fa", "a", "app-v2_x"])
def test_real_project_names_pass(name: str) -> None:
    assert names.check_project(name, "w") == name


@pytest.mark.parametrize("name", ["Chatwoot", "-x", "_x", "a.b", "my app", "x" * 256])
def test_compose_refuses_these_project_names_too(name: str) -> None:
    with pytest.raises(ConfigError, match="compose project name"):
        names.check_project(name, "w")


@pytest.mark.parametrize(
    "name",
    ["chatwoot", "chatwoot-sidekiq", "chatwoot-proxy", "postgres", "redis", "platform-api",
     "janus-gateway", "Web", "api_v2", "worker.1", "x"],
)  # fmt: skip
def test_real_service_names_pass(name: str) -> None:
    assert names.check_service(name, "w") == name


@pytest.mark.parametrize("name", ["-d", "--remove-orphans", ".hidden", "_x", "x" * 256])
def test_service_names_that_read_as_options_or_paths_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="compose service name"):
        names.check_service(name, "w")


@pytest.mark.parametrize(
    "name",
    [
        lab_database.DATABASE,
        "postgres",
        "my-app",
        "App.v2",
        "MyApp",
        "_private",
        "2024data",
        "d" * 63,
    ],
)
def test_real_database_names_pass(name: str) -> None:
    assert names.check_database(name, "w") == name


@pytest.mark.parametrize("name", [*lab_database.ROLES, "postgres", "chatwoot", "app-user", "ro.1"])
def test_real_role_names_pass(name: str) -> None:
    assert names.check_role(name, "w") == name


@pytest.mark.parametrize(
    "name",
    [
        "d" * 64,  # PostgreSQL would silently use only 63 bytes: a different database
        "host=evil.example dbname=x",  # libpq would read it as a connection string
        "dbname=x",
        "postgresql://evil.example/x",
        "postgres://evil.example/x",
        "a$b",
        "-d",
        ".x",
    ],
)
def test_database_names_libpq_or_the_tools_would_misread_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="PostgreSQL database name"):
        names.check_database(name, "w")
    with pytest.raises(ConfigError, match="PostgreSQL role name"):
        names.check_role(name, "w")


# -- properties ---------------------------------------------------------------------------

SIMPLE = {k: v for k, v in CHECKS.items() if k != "image"}


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(sorted(SIMPLE)), name=st.text(max_size=80))
def test_an_accepted_name_is_one_plain_word(kind: str, name: str) -> None:
    """Whatever is accepted needs no shell quoting and is never read as an option."""
    try:
        SIMPLE[kind](name, "w")
    except ConfigError as e:
        assert str(e).isascii() and "\n" not in str(e)
        return
    assert name and shlex.quote(name) == name
    assert not name.startswith(("-", ".")) and "=" not in name and "/" not in name
    assert name.isascii() and name.isprintable()


@settings(max_examples=300, deadline=None)
@given(ref=st.text(alphabet=st.sampled_from("ab09Z-_.:/@[]$ \n'\"`;"), max_size=40))
def test_an_accepted_image_reference_is_never_an_option_or_shell_syntax(ref: str) -> None:
    try:
        names.check_image(ref, "w")
    except ConfigError:
        return
    assert ref and not ref.startswith("-")
    assert not set(ref) & set("$ \n'\"`;")
