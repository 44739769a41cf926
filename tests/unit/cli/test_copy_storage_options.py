"""`vkbackup copy` and the global `--storage NAME` (issue 17, copies 3-2-1), parsed by
the real `cli` group (click's CliRunner) over local directories holding real
snapshots (tests/unit/actions/builders.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.unit.actions.builders import SnapshotBuilder
from vkbackup import layout
from vkbackup.cli.context import AppContext
from vkbackup.cli.main import cli
from vkbackup.config.model import RetentionConfig
from vkbackup.crypto import generate_identity
from vkbackup.errors import UsageError
from vkbackup.storage.local import LocalStorage


def invoke(args: list[str], app: AppContext | None = None) -> Result:
    return CliRunner().invoke(cli, args, obj=app or AppContext(), standalone_mode=False)


class Env:
    def __init__(self, root: Path) -> None:
        self.store = root / "store"
        self.usb = root / "usb"
        self.offsite = root / "offsite"
        ident = generate_identity()
        self.config = root / "vkbackup.toml"
        self.config.write_text(
            f'[storage]\npath = "{self.store}"\n\n'
            f'[encryption]\nrecipients = ["{ident.recipient()}"]\n\n'
            "[retention]\nkeep_last = 3\n\n"
            '[hosts.prod]\naddress = "127.0.0.1"\n\n'
            '[[hosts.prod.sources]]\ntype = "files"\nname = "etc"\npaths = ["/etc/hostname"]\n\n'
            f'[[copies]]\nname = "usb"\npath = "{self.usb}"\n'
            "[copies.retention]\nkeep_last = 1\n\n"
            f'[[copies]]\nname = "offsite"\npath = "{self.offsite}"\n'
        )
        builder = SnapshotBuilder(LocalStorage(self.store), "prod", [ident.recipient()])
        now = datetime.now(UTC).replace(microsecond=0)
        self.ids = [
            builder.snapshot(now - timedelta(hours=h), new={"etc": str(h).encode()}).id
            for h in (3, 2)
        ]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_copy_latest_to_every_copy_then_read_it_with_storage(env: Env) -> None:
    r = invoke(["copy", "--config", str(env.config), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] and [(s["copy"], s["id"], s["status"]) for s in doc["snapshots"]] == [
        ("usb", env.ids[1], "copied"),
        ("offsite", env.ids[1], "copied"),
    ]
    # --storage before or after the command selects the copy
    for args in (
        ["--storage", "usb", "list", "--json", "--config", str(env.config)],
        ["list", "--json", "--storage", "offsite", "--config", str(env.config)],
    ):
        r = invoke(args)
        assert r.exit_code == 0, r.output
        assert [row["id"] for row in json.loads(r.stdout)] == [env.ids[1]]
    # and --all adds the older one to the copy named by --to only
    r = invoke(["copy", "--all", "--to", "usb", "--config", str(env.config)])
    assert r.exit_code == 0, r.output
    assert f"copy usb: prod/{env.ids[0]} copied" in r.output
    assert f"copy usb: prod/{env.ids[1]} already" in r.output
    assert (env.usb / layout.manifest_key("prod", env.ids[0])).is_file()
    assert not (env.offsite / layout.manifest_key("prod", env.ids[0])).exists()


def test_dry_run_copies_nothing(env: Env) -> None:
    r = invoke(["copy", "--all", "--dry-run", "--config", str(env.config)])
    assert r.exit_code == 0, r.output
    assert r.output.count("would copy") == 4
    assert not env.usb.exists() and not env.offsite.exists()


def test_unknown_storage_name_is_a_usage_error_listing_the_copies(env: Env) -> None:
    r = invoke(["--storage", "tape", "list", "--config", str(env.config)])
    assert isinstance(r.exception, UsageError)
    assert "no copy named 'tape'" in str(r.exception)
    assert "usb, offsite" in str(r.exception)
    r = invoke(["copy", "--to", "tape", "--config", str(env.config)])
    assert isinstance(r.exception, UsageError) and "usb, offsite" in str(r.exception)


def test_a_copy_is_never_its_own_destination_and_snapshot_refuses_storage(env: Env) -> None:
    r = invoke(["--storage", "usb", "copy", "--to", "usb", "--config", str(env.config)])
    assert isinstance(r.exception, UsageError) and "is the source" in str(r.exception)
    r = invoke(["--storage", "usb", "snapshot", "--dry-run", "--config", str(env.config)])
    assert isinstance(r.exception, UsageError) and "--storage usb" in str(r.exception)


def test_copy_from_a_copy_to_the_other_copies(env: Env) -> None:
    assert invoke(["copy", "--to", "usb", "--config", str(env.config)]).exit_code == 0
    r = invoke(["--storage", "usb", "copy", "--json", "--config", str(env.config)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [s["copy"] for s in doc["snapshots"]] == ["offsite"]
    assert doc["source"] == str(env.usb)


def test_retention_is_the_copys_own_or_the_main_one(env: Env) -> None:
    app = AppContext(config_path=str(env.config))
    assert app.retention() == RetentionConfig(keep_last=3)
    app.storage_name = "usb"
    assert app.retention() == RetentionConfig(keep_last=1)
    assert app.storage_config().path == env.usb
    app = AppContext(config_path=str(env.config), storage_name="offsite")
    assert app.retention() == RetentionConfig(keep_last=3)  # inherited


def test_prune_of_a_copy_uses_its_retention(env: Env) -> None:
    assert invoke(["copy", "--all", "--config", str(env.config)]).exit_code == 0
    r = invoke(["--storage", "usb", "prune", "--dry-run", "--json", "--config", str(env.config)])
    assert r.exit_code == 0, r.output
    host = json.loads(r.stdout)["hosts"][0]
    keep = {s["id"]: s["keep"] for s in host["snapshots"]}
    assert keep == {env.ids[0]: False, env.ids[1]: True}  # keep_last = 1 in the copy
    r = invoke(["prune", "--dry-run", "--json", "--config", str(env.config)])
    assert r.exit_code == 0, r.output
    host = json.loads(r.stdout)["hosts"][0]
    assert all(s["keep"] for s in host["snapshots"]), host  # keep_last = 3 in [storage]


def test_config_check_names_every_copy(env: Env) -> None:
    r = invoke(["config", "check", "--config", str(env.config)])
    assert r.exit_code == 0, r.output
    assert f"  copy usb: local directory {env.usb}\n" in r.output
    assert f"  copy offsite: local directory {env.offsite}\n" in r.output
    r = invoke(["config", "check", "--config", str(env.config), "--json"])
    doc = json.loads(r.stdout)
    assert doc["copies"] == {
        "usb": f"local directory {env.usb}",
        "offsite": f"local directory {env.offsite}",
    }
    assert doc["copy_after"] is False
