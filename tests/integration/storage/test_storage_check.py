"""`vkbackup storage check` against the real S3 server: plain bucket, Object Lock
bucket, a lock configured on a bucket without it, a provider that ignores
If-None-Match, and the CLI's exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.lab.s3 import S3Server
from vkbackup.actions.storage_check import run_storage_check
from vkbackup.config.model import ObjectLock, StorageConfig
from vkbackup.storage.s3 import S3Storage

REPO = Path(__file__).resolve().parents[3]
Cfg = Callable[..., StorageConfig]


def statuses(report: Any) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def leftover_keys(server: S3Server, bucket: str) -> list[str]:
    resp = server.client().list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in resp.get("Contents", [])]


def test_plain_bucket_passes(s3_server: S3Server, s3_bucket: str, s3_config: Cfg) -> None:
    report = run_storage_check(s3_config(s3_bucket, prefix="vk"))
    assert report.ok, report.to_json()
    st = statuses(report)
    for name in ("reach", "write", "read back", "list", "conditional create", "multipart"):
        assert st[name] == "ok", (name, report.to_json())
    assert st["checksums"] == "ok"
    assert st["versioning"] == "info"
    assert st["object lock"] == "info"
    assert st["delete"] == "ok"
    assert leftover_keys(s3_server, s3_bucket) == []
    assert report.target.startswith(f"s3://{s3_bucket}/vk (endpoint http://127.0.0.1:")


def test_lock_bucket_passes_with_lock_probes(s3_lock_bucket: str, s3_config: Cfg) -> None:
    cfg = s3_config(s3_lock_bucket, object_lock=ObjectLock(mode="governance", days=30))
    report = run_storage_check(cfg)
    assert report.ok, report.to_json()
    st = statuses(report)
    assert st["object lock"] == "ok"
    assert st["object lock: retention"] == "ok"
    assert st["object lock: delete refused"] == "ok"
    assert st["versioning"] == "info"
    detail = next(c.detail for c in report.checks if c.name == "object lock: retention")
    assert "retained until" in detail


def test_lock_bucket_without_lock_config_warns(s3_lock_bucket: str, s3_config: Cfg) -> None:
    report = run_storage_check(s3_config(s3_lock_bucket))
    assert report.ok
    lock = next(c for c in report.checks if c.name == "object lock")
    assert lock.status == "warn" and lock.hint and "storage.object_lock" in lock.hint


def test_lock_configured_on_plain_bucket_fails_early(s3_bucket: str, s3_config: Cfg) -> None:
    cfg = s3_config(s3_bucket, object_lock=ObjectLock(mode="compliance", days=7))
    report = run_storage_check(cfg)
    assert not report.ok
    lock = next(c for c in report.checks if c.name == "object lock")
    assert lock.status == "fail" and "has no Object Lock" in lock.detail
    assert lock.hint and "create a new bucket" in lock.hint
    assert statuses(report)["write"] == "skip"


def test_provider_ignoring_if_none_match_fails_check(s3_bucket: str, s3_config: Cfg) -> None:
    cfg = s3_config(s3_bucket)
    store = S3Storage.from_config(cfg)

    def drop_condition(request: Any, **kw: Any) -> None:
        if "If-None-Match" in request.headers:  # before signing: still a valid request
            del request.headers["If-None-Match"]

    store.client.meta.events.register("before-sign.s3.PutObject", drop_condition)
    report = run_storage_check(cfg, store)
    assert not report.ok
    cond = next(c for c in report.checks if c.name == "conditional create")
    assert cond.status == "fail", report.to_json()
    assert cond.hint and "If-None-Match" in cond.hint
    assert [c.name for c in report.failed()] == ["conditional create"]


def _cli(cfg_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(cfg_path), "storage", "check", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cfg_path.parent)},
        timeout=120,
    )


def _toml(server: S3Server, bucket: str, extra: str = "") -> str:
    return (
        "[storage]\n"
        'type = "s3"\n'
        f'bucket = "{bucket}"\n'
        f'endpoint_url = "{server.endpoint}"\n'
        'addressing_style = "path"\n'
        f'access_key_id = "{server.access_key}"\n'
        f'secret_access_key = "{server.secret_key}"\n' + extra
    )


def test_cli_exit_codes(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    good = tmp_path / "good.toml"
    good.write_text(_toml(s3_server, s3_bucket))
    good.chmod(0o600)
    r = _cli(good, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["backend"] == "s3"
    assert s3_server.secret_key not in r.stdout + r.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text(
        _toml(s3_server, s3_bucket, '[storage.object_lock]\nmode = "governance"\ndays = 3\n')
    )
    bad.chmod(0o600)
    r = _cli(bad)
    assert r.returncode == 1
    assert "object lock *" in r.stdout and "FAIL" in r.stdout
    assert "failed: object lock" in r.stderr
