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
from vkbackup.errors import PartialFailure, StorageUnreachableError, UsageError
from vkbackup.storage.local import LocalStorage


def invoke(args: list[str], app: AppContext | None = None) -> Result:
    return CliRunner().invoke(cli, args, obj=app or AppContext(), standalone_mode=False)


class Env:
    def __init__(self, root: Path) -> None:
        self.store = root / "store"
        self.usb = root / "usb"
        self.offsite = root / "offsite"
        self.usb.mkdir()  # a copy's directory is never created by vkbackup
        self.offsite.mkdir()
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
    assert not list(env.usb.iterdir()) and not list(env.offsite.iterdir())


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


# -- review fixes ----------------------------------------------------------------------------


def test_a_missing_copy_directory_is_unreachable_and_never_created(env: Env) -> None:
    env.usb.rmdir()  # a USB disk that is not mounted
    r = invoke(["copy", "--to", "usb", "--config", str(env.config)])
    assert isinstance(r.exception, StorageUnreachableError), r.output
    assert r.exception.exit_code == 10
    assert f"{env.usb}: the directory of the copy 'usb' does not exist" in str(r.exception)
    assert "mkdir" in (r.exception.hint or "") and "mount" in (r.exception.hint or "")
    assert not env.usb.exists()
    # the other copies of the run still go through: exit 3
    r = invoke(["copy", "--config", str(env.config)])
    assert isinstance(r.exception, PartialFailure) and "copy usb" in str(r.exception)
    assert (env.offsite / layout.manifest_key("prod", env.ids[1])).is_file()
    assert not env.usb.exists()
    # and storage check of the copy does not create it either
    r = invoke(["--storage", "usb", "storage", "check", "--config", str(env.config)])
    assert isinstance(r.exception, StorageUnreachableError)
    assert not env.usb.exists()


def test_check_existing_recopies_a_damaged_object_of_a_copied_snapshot(env: Env) -> None:
    assert invoke(["copy", "--to", "usb", "--config", str(env.config)]).exit_code == 0
    [obj] = [p for p in (env.usb / "data").rglob("*") if p.is_file()]
    data = bytearray(obj.read_bytes())
    data[-1] ^= 0x01
    obj.write_bytes(bytes(data))
    r = invoke(["copy", "--to", "usb", "--config", str(env.config), "--json"])
    assert json.loads(r.stdout)["snapshots"][0]["status"] == "already"
    r = invoke(["copy", "--to", "usb", "--check-existing", "--config", str(env.config), "--json"])
    assert r.exit_code == 0, r.output
    [item] = json.loads(r.stdout)["snapshots"]
    assert (item["status"], item["objects_copied"], item["objects_checked"]) == ("repaired", 1, 1)
    key = obj.relative_to(env.usb).as_posix()
    assert obj.read_bytes() == (env.store / key).read_bytes()


def test_storage_check_of_a_copy_is_judged_by_the_copys_own_settings(tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    config = tmp_path / "vkbackup.toml"
    config.write_text(
        '[storage]\ntype = "s3"\nbucket = "primary"\nobject_lock = { mode = "governance", '
        "days = 7 }\n\n"
        f'[[copies]]\nname = "usb"\npath = "{usb}"\n'
    )
    r = invoke(["--storage", "usb", "storage", "check", "--json", "--config", str(config)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["backend"], doc["target"], doc["ok"]) == ("local", str(usb), True)


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["init", "root@127.0.0.1", "-r", "age1x"], "init"),
        (["keys", "generate"], "keys generate"),
        (["encrypt", "-r", "age1x"], "encrypt"),
        (["decrypt"], "decrypt"),
    ],
)
def test_commands_that_read_no_snapshot_refuse_storage(
    env: Env, args: list[str], command: str
) -> None:
    for where in (["--storage", "usb", *args], [*args, "--storage", "usb"]):
        r = invoke([*where, "--config", str(env.config)])
        assert isinstance(r.exception, UsageError), (where, r.output)
        assert r.exception.exit_code == 2
        assert str(r.exception) == (
            f"--storage usb: --storage names a copy to read; `vkbackup {command}` "
            "does not read snapshots"
        )


def test_config_check_says_which_storage_storage_selects(env: Env) -> None:
    r = invoke(["--storage", "usb", "config", "check", "--config", str(env.config)])
    assert r.exit_code == 0, r.output
    assert f"  selected by --storage usb: the copy usb, local directory {env.usb}" in r.output
    r = invoke(["config", "check", "--storage", "usb", "--json", "--config", str(env.config)])
    assert json.loads(r.stdout)["selected_storage"] == {
        "name": "usb",
        "where": f"local directory {env.usb}",
    }
    r = invoke(["config", "check", "--json", "--config", str(env.config)])
    assert json.loads(r.stdout)["selected_storage"] is None
    r = invoke(["--storage", "tape", "config", "check", "--config", str(env.config)])
    assert isinstance(r.exception, UsageError) and "no copy named 'tape'" in str(r.exception)


def test_config_check_warns_of_copy_after_without_copies(tmp_path: Path) -> None:
    config = tmp_path / "vkbackup.toml"
    config.write_text(f'[storage]\npath = "{tmp_path}"\n\n[snapshot]\ncopy_after = true\n')
    r = invoke(["config", "check", "--config", str(config)])
    assert r.exit_code == 0, r.output
    assert (
        "  warning: snapshot.copy_after = true, but no [[copies]] is configured: "
        "nothing is copied after a snapshot\n"
    ) in r.output
    r = invoke(["config", "check", "--json", "--config", str(config)])
    [warning] = json.loads(r.stdout)["warnings"]
    assert "snapshot.copy_after" in warning
    config.write_text(f'[storage]\npath = "{tmp_path}"\n')
    r = invoke(["config", "check", "--json", "--config", str(config)])
    assert json.loads(r.stdout)["warnings"] == []


def test_check_of_a_copy_leaves_the_textfile_ages_of_storage(env: Env, tmp_path: Path) -> None:
    prom = tmp_path / "vkbackup.prom"
    env.config.write_text(
        env.config.read_text().replace(
            "[retention]", f'[monitoring]\ntextfile = "{prom}"\n\n[retention]'
        )
    )
    r = invoke(["--storage", "usb", "check", "--config", str(env.config)])
    assert r.exception is not None  # nothing copied yet: stale, exit 1
    assert not prom.exists()
    invoke(["check", "--config", str(env.config)])
    assert 'vkbackup_last_snapshot_age_seconds{host="prod"}' in prom.read_text()
