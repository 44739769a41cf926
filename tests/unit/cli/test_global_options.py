"""The CLI's consistency (issue 17): the global options (--config, -q, -v/-vv,
--log-json) after the command name as well as before it, on every command;
`--host NAME` on every command that acts on one host, beside the positional
HOST of `list` and `snapshot`; a host the config lacks is a usage error naming
the config; $VKBACKUP_IDENTITY between --identity and encryption.identity.

Parsing is real (click's CliRunner on the real `cli` group); the snapshots
read are real objects in a local directory (tests/unit/actions/builders.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from tests.unit.actions.builders import SnapshotBuilder
from vkbackup.cli.context import AppContext
from vkbackup.cli.main import cli
from vkbackup.crypto import X25519Identity, generate_identity, write_identity_file
from vkbackup.errors import ConfigError, UsageError, WrongKeyError
from vkbackup.storage.local import LocalStorage

REPO = Path(__file__).resolve().parents[3]

#: every command, and those that act on one host (with the option that names it)
COMMANDS = {
    ("config", "check"),
    ("keys", "generate"),
    ("encrypt",),
    ("decrypt",),
    ("storage", "check"),
    ("init",),
    ("snapshot",),
    ("restore",),
    ("list",),
    ("show",),
    ("verify",),
    ("prune",),
    ("drill",),
    ("check",),
    ("copy",),
    ("ls",),
    ("dump",),
    ("wal-stream",),
}
ONE_HOST = [("list",), ("snapshot",), ("show",), ("verify",), ("restore",), ("prune",),
            ("drill",), ("check",), ("init",), ("copy",), ("ls",), ("dump",),
            ("wal-stream",)]  # fmt: skip


def leaves(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from leaves(cmd, (*path, name))
        else:
            yield (*path, name)


ALL = sorted(leaves(cli))


def invoke(args: list[str], app: AppContext | None = None, **env: str) -> Result:
    return CliRunner().invoke(cli, args, obj=app, env=env or None, standalone_mode=False)


def test_every_command_is_covered() -> None:
    assert set(ALL) == COMMANDS


# -- global options after the command name ------------------------------------------------


@pytest.mark.parametrize("path", ALL, ids=" ".join)
def test_help_of_every_command_lists_the_global_options(path: tuple[str, ...]) -> None:
    r = invoke([*path, "--help"])
    assert r.exit_code == 0, r.output
    for shown in ("--config PATH", "-v, --verbose", "-q, --quiet", "--log-json"):
        assert shown in r.output, (path, shown)


@pytest.mark.parametrize("path", ALL, ids=" ".join)
def test_global_options_after_every_command_are_parsed(path: tuple[str, ...]) -> None:
    # --help last: click applies the options given before it, then stops.
    app = AppContext()
    r = invoke([*path, "-q", "--config", "/x/vkbackup.toml", "--log-json", "--help"], app)
    assert r.exit_code == 0, r.output
    assert app.config_path == "/x/vkbackup.toml"
    assert app.quiet and app.log_json and app.verbosity == -1
    app = AppContext()
    assert invoke([*path, "-vv", "--help"], app).exit_code == 0
    assert app.verbosity == 2 and not app.quiet
    app = AppContext()
    assert invoke(["-v", *path, "--verbose", "--help"], app).exit_code == 0
    assert app.verbosity == 2  # before and after add up


def test_global_options_before_the_command_still_work() -> None:
    app = AppContext()
    r = invoke(["--config", "/y.toml", "-q", "--log-json", "list", "--help"], app)
    assert r.exit_code == 0
    assert app.config_path == "/y.toml" and app.verbosity == -1 and app.log_json


# -- a real store ---------------------------------------------------------------------------


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ident: X25519Identity = generate_identity()
        self.identity_file = root / "identity.txt"
        write_identity_file(self.identity_file, self.ident)
        self.store = root / "store"
        self.store.mkdir()
        self.config = root / "vkbackup.toml"
        self.config.write_text(
            f'[storage]\npath = "{self.store}"\n\n'
            f'[encryption]\nrecipients = ["{self.ident.recipient()}"]\n\n'
            '[hosts.prod]\naddress = "127.0.0.1"\n\n'
            '[[hosts.prod.sources]]\ntype = "files"\nname = "etc"\npaths = ["/etc/hostname"]\n'
        )
        builder = SnapshotBuilder(LocalStorage(self.store), "prod", [self.ident.recipient()])
        self.id = builder.snapshot(
            datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1), new={"etc": b"x"}
        ).id


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_list_with_options_after_the_host(env: Env) -> None:
    app = AppContext()
    r = invoke(["list", "prod", "--config", str(env.config), "-q"], app)
    assert r.exit_code == 0, r.output
    assert env.id in r.output and app.verbosity == -1
    r = invoke(["list", "--host", "prod", "--json", "--config", str(env.config), "-v"])
    assert r.exit_code == 0, r.output
    assert [row["id"] for row in json.loads(r.output)] == [env.id]
    same = invoke(["list", "prod", "--host", "prod", "--config", str(env.config)])
    assert same.exit_code == 0 and env.id in same.output


def test_positional_host_and_a_different_host_option_is_a_usage_error(env: Env) -> None:
    for path in (["list"], ["snapshot", "--dry-run"]):
        r = invoke([*path, "prod", "--host", "staging", "--config", str(env.config)])
        assert isinstance(r.exception, UsageError), r.output
        assert "two hosts given: 'prod' (HOST) and 'staging' (--host)" in str(r.exception)


def test_snapshot_host_positional_or_option(env: Env) -> None:
    for args in (["prod"], ["--host", "prod"]):
        r = invoke(["snapshot", *args, "--dry-run", "--config", str(env.config)])
        assert r.exit_code == 0, r.output
        assert "host prod (root@127.0.0.1:22)" in r.output and "files:etc" in r.output


@pytest.mark.parametrize("path", ONE_HOST, ids=" ".join)
def test_every_one_host_command_takes_host(path: tuple[str, ...]) -> None:
    r = invoke([*path, "--help"])
    assert "--host" in r.output, path


@pytest.mark.parametrize(
    "args",
    [
        ["list", "ghost"],
        ["list", "--host", "ghost"],
        ["snapshot", "ghost", "--dry-run"],
        ["snapshot", "--host", "ghost", "--dry-run"],
        ["show", "latest", "--host", "ghost"],
        ["verify", "--host", "ghost", "--no-decrypt"],
        ["prune", "--host", "ghost", "--dry-run"],
        ["restore", "latest", "--host", "ghost", "--to", "prod", "--dry-run"],
        ["drill", "--host", "ghost", "--to", "prod"],
        ["check", "--host", "ghost"],
    ],
    ids=lambda a: " ".join(a),
)
def test_a_host_the_config_lacks_is_a_usage_error_naming_the_config(
    env: Env, args: list[str]
) -> None:
    r = invoke([*args, "--config", str(env.config)])
    assert isinstance(r.exception, UsageError), (args, r.output, r.exception)
    assert f"host 'ghost' is not in the config {env.config} (its hosts: prod)" in str(r.exception)
    assert f"config lookup: --config: {env.config}: used" in (r.exception.hint or "")


def test_a_host_the_config_lacks_exits_2_naming_where_the_lookup_looked(env: Env) -> None:
    """Run as a user would: the config found by ./vkbackup.toml in the working directory."""
    home = env.root / "home"
    home.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "vkbackup", "list", "ghost"],
        capture_output=True,
        text=True,
        cwd=env.root,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert f"host 'ghost' is not in the config {env.config} (its hosts: prod)" in r.stderr
    assert "--config: not given; $VKBACKUP_CONFIG: not set; " in r.stderr
    assert f"./vkbackup.toml: {env.config}: used" in r.stderr


def test_a_config_without_hosts_reads_any_hosts_snapshots(env: Env) -> None:
    """A machine that only restores has storage and keys but no [hosts]."""
    restore_only = env.root / "restore-only.toml"
    restore_only.write_text(env.config.read_text().split("[hosts.prod]")[0])
    r = invoke(["list", "prod", "--config", str(restore_only)])
    assert r.exit_code == 0 and env.id in r.output, r.output


# -- $VKBACKUP_IDENTITY ---------------------------------------------------------------------


def test_identity_precedence(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_id = env.root / "from-config.txt"
    with_identity = env.root / "with-identity.toml"
    with_identity.write_text(
        env.config.read_text().replace("[encryption]\n", f'[encryption]\nidentity = "{cfg_id}"\n')
    )
    app = AppContext(config_path=str(with_identity))
    monkeypatch.delenv("VKBACKUP_IDENTITY", raising=False)
    assert app.identity_path(None) == (str(cfg_id), f"encryption.identity in {with_identity}")
    monkeypatch.setenv("VKBACKUP_IDENTITY", "/env/identity.txt")
    assert app.identity_path(None) == ("/env/identity.txt", "$VKBACKUP_IDENTITY")
    assert app.identity_path("/flag.txt") == ("/flag.txt", "--identity")
    bare = AppContext(config_path=str(env.config))
    monkeypatch.delenv("VKBACKUP_IDENTITY")
    assert bare.identity_path(None) is None
    assert bare.identity_loader(None, None) is None


def test_vkbackup_identity_opens_the_private_part(env: Env) -> None:
    sealed = invoke(["show", "latest", "--config", str(env.config)])
    assert sealed.exit_code == 0 and "encryption.identity is not set" in sealed.output
    app = AppContext()
    opened = invoke(
        ["show", "latest", "--config", str(env.config)],
        app,
        VKBACKUP_IDENTITY=str(env.identity_file),
    )
    assert opened.exit_code == 0, opened.output
    assert "Test OS" in opened.output  # from the private part
    assert app.identity_origin == f"{env.identity_file} ($VKBACKUP_IDENTITY)"


def test_identity_option_wins_over_vkbackup_identity(env: Env) -> None:
    other = env.root / "other.txt"
    write_identity_file(other, generate_identity())
    app = AppContext()
    r = invoke(
        ["show", "latest", "-i", str(other), "--config", str(env.config)],
        app,
        VKBACKUP_IDENTITY=str(env.identity_file),
    )
    assert isinstance(r.exception, WrongKeyError), r.output
    assert app.identity_origin == f"{other} (--identity)"


def test_vkbackup_identity_satisfies_verify(env: Env) -> None:
    r = invoke(
        ["verify", "--all", "--config", str(env.config)],
        VKBACKUP_IDENTITY=str(env.identity_file),
    )
    assert r.exit_code == 0, (r.output, r.exception)
    assert f"prod/{env.id}: ok" in r.output


# -- no config: which commands need one ---------------------------------------------------


def test_init_runs_without_a_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("VKBACKUP_CONFIG", raising=False)
    monkeypatch.setenv("VKBACKUP_TEST_SYSTEM_CONFIG", str(tmp_path / "absent.toml"))
    app = AppContext()
    assert app.config(required=False).source_file is None  # what init starts from
    with pytest.raises(ConfigError, match="no config file found"):
        app.config()
