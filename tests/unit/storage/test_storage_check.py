"""`vkbackup storage check` on the local backend: the table, --json, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vkbackup.actions.storage_check import Check, CheckReport, run_storage_check
from vkbackup.cli.storage_cmd import render_table
from vkbackup.config.model import StorageConfig

REPO = Path(__file__).resolve().parents[3]


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(config), "storage", "check", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(config.parent)},
        timeout=120,
    )


def write_config(tmp_path: Path, repo: Path) -> Path:
    cfg = tmp_path / "vkbackup.toml"
    cfg.write_text(f'[storage]\ntype = "local"\npath = "{repo}"\n')
    cfg.chmod(0o600)
    return cfg


def test_local_check_passes_and_cleans_up(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    report = run_storage_check(StorageConfig(type="local", path=repo))
    assert report.ok, report.to_json()
    by_name = {c.name: c for c in report.checks}
    for name in ("reach", "write", "read back", "list", "conditional create", "large write"):
        assert by_name[name].status == "ok" and by_name[name].required
    assert by_name["delete"].status == "ok"
    assert by_name["free space"].status in ("info", "warn")
    assert [p for p in repo.rglob("*") if p.is_file()] == []


def test_cli_table_and_exit_0(tmp_path: Path) -> None:
    r = run_cli(write_config(tmp_path, tmp_path / "repo"))
    assert r.returncode == 0, r.stderr
    assert f"storage: {tmp_path / 'repo'}" in r.stdout
    assert "conditional create *" in r.stdout
    assert "FAIL" not in r.stdout


def test_cli_json(tmp_path: Path) -> None:
    r = run_cli(write_config(tmp_path, tmp_path / "repo"), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["backend"] == "local"
    assert {c["name"] for c in doc["checks"]} >= {"write", "read back", "delete"}


def test_cli_unusable_directory_exits_10_with_hint(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")  # a file where the directory should be
    r = run_cli(write_config(tmp_path, blocker / "repo"))
    assert r.returncode == 10  # ExitCode.STORAGE_UNREACHABLE: the "reach" probe failed
    assert "reach *" in r.stdout and "FAIL" in r.stdout
    assert "skip" in r.stdout
    assert "required storage capability(ies) failed: reach" in r.stderr
    assert "Traceback" not in r.stderr


def test_render_table_shows_hints_for_failures() -> None:
    report = CheckReport(
        target="s3://b",
        backend="s3",
        checks=[
            Check("reach", "ok", True, "bucket b answers"),
            Check("conditional create", "fail", True, "overwrote", hint="provider ignores it"),
            Check("versioning", "info", False, "Disabled"),
        ],
    )
    text = render_table(report)
    lines = text.splitlines()
    assert lines[0] == "storage: s3://b"
    row = next(i for i, line in enumerate(lines) if line.startswith("conditional create *"))
    assert "FAIL" in lines[row] and "overwrote" in lines[row]
    assert lines[row + 1].strip() == "-> provider ignores it"
    assert "NOT usable" in lines[-1]
    assert not report.ok and [c.name for c in report.failed()] == ["conditional create"]


def test_probe_storage_is_a_private_copy_with_small_parts_and_a_short_lock() -> None:
    from vkbackup.config.model import ObjectLock
    from vkbackup.storage.s3 import S3Storage
    from vkbackup.storage.s3_probes import PROBE_LOCK_DAYS, probe_storage

    client = object()
    store = S3Storage(client, "b", "p", object_lock=ObjectLock("compliance", 30), part_size=None)
    probe = probe_storage(store, 5 * 1024 * 1024)
    assert probe is not store and probe.client is client and probe.prefix == "p"
    assert probe.part_size == 5 * 1024 * 1024 and probe.object_lock is not None
    assert probe.object_lock.days == PROBE_LOCK_DAYS and probe.object_lock.mode == "compliance"
    # the configured backend is untouched
    assert store.part_size is None and store.object_lock is not None
    assert store.object_lock.days == 30
    assert probe_storage(S3Storage(client, "b"), 1).object_lock is None
