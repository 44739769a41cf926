"""--limit-upload / --limit-download (issue 17) on snapshot, restore and verify:
the option overrides [transfer] (0 lifts a configured limit), and the storage
the command opens is paced accordingly. Parsing is real (CliRunner on `cli`);
the snapshot read is a real object in a local directory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.unit.actions.builders import SnapshotBuilder
from vkbackup.cli.context import AppContext
from vkbackup.cli.main import cli
from vkbackup.crypto import generate_identity, write_identity_file
from vkbackup.signed_storage import SignedStorage
from vkbackup.storage.local import LocalStorage
from vkbackup.storage.throttled import KIB, ThrottledStorage


class Env:
    def __init__(self, root: Path, transfer: str = "") -> None:
        self.ident = generate_identity()
        self.identity_file = root / "identity.txt"
        write_identity_file(self.identity_file, self.ident)
        self.store = root / "store"
        self.store.mkdir()
        self.config = root / "vkbackup.toml"
        self.config.write_text(
            f'[storage]\npath = "{self.store}"\n\n'
            f'[encryption]\nrecipients = ["{self.ident.recipient()}"]\n\n'
            f"{transfer}\n"
            '[hosts.prod]\naddress = "127.0.0.1"\n\n'
            '[[hosts.prod.sources]]\ntype = "files"\nname = "etc"\npaths = ["/etc/hostname"]\n'
        )
        SnapshotBuilder(LocalStorage(self.store), "prod", [self.ident.recipient()]).snapshot(
            datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1), new={"etc": b"x"}
        )


LIMITED = "[transfer]\nlimit_upload_kib = 300\nlimit_download_kib = 200\n"


def run(env: Env, args: list[str]) -> tuple[AppContext, Result]:
    app = AppContext()
    r = CliRunner().invoke(
        cli, [*args, "--config", str(env.config)], obj=app, standalone_mode=False
    )
    assert r.exit_code == 0, (r.output, r.exception)
    return app, r


def limits(app: AppContext) -> tuple[float | None, float | None]:
    """(upload, download) bytes/s of the storage the command opened (None: no limit)."""
    signed = app._storage
    assert isinstance(signed, SignedStorage)
    inner = signed.inner
    if not isinstance(inner, ThrottledStorage):
        assert isinstance(inner, LocalStorage)
        return None, None
    return (
        inner.upload.rate if inner.upload else None,
        inner.download.rate if inner.download else None,
    )


VERIFY = ["verify", "--no-decrypt"]
SNAPSHOT = ["snapshot", "prod", "--dry-run"]


@pytest.mark.parametrize("cmd", [VERIFY, SNAPSHOT])
def test_no_config_no_option_no_limit(tmp_path: Path, cmd: list[str]) -> None:
    app, _ = run(Env(tmp_path), cmd)
    assert limits(app) == (None, None)


@pytest.mark.parametrize("cmd", [VERIFY, SNAPSHOT])
def test_the_config_limits_apply(tmp_path: Path, cmd: list[str]) -> None:
    app, _ = run(Env(tmp_path, LIMITED), cmd)
    assert limits(app) == (300 * KIB, 200 * KIB)


def test_options_override_the_config(tmp_path: Path) -> None:
    env = Env(tmp_path, LIMITED)
    app, _ = run(env, [*VERIFY, "--limit-download", "1024"])
    assert limits(app) == (300 * KIB, 1024 * KIB)
    app, _ = run(env, [*SNAPSHOT, "--limit-upload", "4096"])
    assert limits(app) == (4096 * KIB, 200 * KIB)
    app, _ = run(env, [*SNAPSHOT, "--limit-upload", "0", "--limit-download", "0"])
    assert limits(app) == (None, None)  # 0 lifts the configured limits


def test_options_without_a_transfer_table(tmp_path: Path) -> None:
    app, _ = run(Env(tmp_path), [*SNAPSHOT, "--limit-upload", "64"])
    assert limits(app) == (64 * KIB, None)


def test_restore_takes_the_options(tmp_path: Path) -> None:
    env = Env(tmp_path, LIMITED)
    app, r = run(
        env,
        ["restore", "latest", "--to", "prod", "--dry-run", "-i", str(env.identity_file),
         "--limit-download", "512"],
    )  # fmt: skip
    assert "restore plan" in r.output
    assert limits(app) == (300 * KIB, 512 * KIB)


@pytest.mark.parametrize("cmd", [["snapshot"], ["restore"], ["verify"]])
def test_the_options_are_on_the_three_commands_and_refuse_negative(cmd: list[str]) -> None:
    r = CliRunner().invoke(cli, [*cmd, "--help"])
    assert "--limit-upload KIB" in r.output and "--limit-download KIB" in r.output
    r = CliRunner().invoke(cli, [*cmd, "--limit-upload", "-1"])
    assert r.exit_code == 2 and "--limit-upload" in r.output
    r = CliRunner().invoke(cli, [*cmd, "--limit-download", "fast"])
    assert r.exit_code == 2 and "--limit-download" in r.output
