"""Issue 17, copies (3-2-1), against the lab: prod is snapshotted into a bucket of
its own on the lab's SeaweedFS, copied to a local directory (`[[copies]]`
"offsite"), the copy is killed midway and re-run, then the primary bucket is
deleted whole and prod is restored onto the fresh host from the copy alone
(`--storage offsite`), byte-identical to prod by the same oracle as every
restore test (table digests, schema, roles, sequences, volume trees, secret
and config files, containers, health)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_snapshot_restore import PLAYBOOK, assert_fresh_equals_prod
from tests.lab.api import Lab


def vk(cfg: Path, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "vkbackup", "--config", str(cfg), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def empty_bucket(s3: Any, bucket: str) -> None:
    """Delete every object, version and unfinished upload of *bucket*, then the bucket."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=o["Key"])
    for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    s3.delete_bucket(Bucket=bucket)


@pytest.fixture
def primary(lab: Lab) -> Iterator[str]:
    """A bucket of this test's own on the lab's SeaweedFS: the primary storage."""
    bucket = f"vk-primary-{secrets.token_hex(4)}"
    s3 = lab.s3_client()
    s3.create_bucket(Bucket=bucket)
    try:
        yield bucket
    finally:
        names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
        if bucket in names:
            empty_bucket(s3, bucket)


@pytest.fixture
def cfg(lab: Lab, tmp_path: Path, primary: str) -> Path:
    """The lab's S3 config on the test's own bucket, with one copy: a local directory."""
    text = lab.s3_config_path.read_text()
    text = re.sub(r'(?m)^bucket = ".*"$', f'bucket = "{primary}"', text, count=1)
    (tmp_path / "offsite").mkdir()
    text += f'\n[[copies]]\nname = "offsite"\ntype = "local"\npath = "{tmp_path / "offsite"}"\n'
    p = tmp_path / "vkbackup.toml"
    p.write_text(text)
    p.chmod(0o600)
    return p


def data_files(root: Path) -> list[Path]:
    """The complete data objects under a local storage (no temporary files)."""
    if not (root / "data").exists():
        return []
    return [p for p in (root / "data").rglob("*") if p.is_file() and not p.name.startswith(".")]


def test_copy_killed_then_resumed_restores_with_the_primary_bucket_deleted(
    fresh_lab: Lab, cfg: Path, tmp_path: Path, primary: str
) -> None:
    lab = fresh_lab
    offsite = tmp_path / "offsite"
    cp = vk(cfg, "snapshot", "prod", "--json")
    assert cp.returncode == 0, cp.stderr
    sid = json.loads(cp.stdout)["id"]
    manifest = offsite / "snapshots" / "prod" / f"{sid}.json"

    # kill the copy once its first object is in place (paced, so there is a midway)
    argv = [sys.executable, "-m", "vkbackup", "--config", str(cfg), "copy", sid]
    proc = subprocess.Popen(
        [*argv, "--to", "offsite", "--limit-upload", "8192"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not data_files(offsite):
        time.sleep(0.05)
    if proc.poll() is not None:
        _, err = proc.communicate()
        pytest.fail(f"copy ended (exit {proc.returncode}) before it was killed: {err!r}")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    copied_before = len(data_files(offsite))
    assert copied_before >= 1
    assert not manifest.exists(), "the manifest must be copied last"
    listed = vk(cfg, "--storage", "offsite", "list", "prod", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []

    again = vk(cfg, "copy", sid, "--to", "offsite", "--json")
    assert again.returncode == 0, again.stderr
    assert manifest.exists()
    assert len(data_files(offsite)) > copied_before
    # the copy's manifest and signature are the primary's, byte for byte
    s3 = lab.s3_client()
    for key in (f"lab/snapshots/prod/{sid}.json", f"lab/snapshots/prod/{sid}.json.sig"):
        body = s3.get_object(Bucket=primary, Key=key)["Body"].read()
        assert (offsite / key.removeprefix("lab/")).read_bytes() == body, key
    checked = vk(cfg, "--storage", "offsite", "verify", sid)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # the primary is lost: the whole bucket is gone
    empty_bucket(s3, primary)
    gone = vk(cfg, "list", "prod")
    assert gone.returncode == 10, gone.stderr  # storage missing or unreachable
    cp = vk(
        cfg, "--storage", "offsite", "restore", sid, "--host", "prod", "--to", "fresh",
        "--playbook", PLAYBOOK, "--yes", "--json",
    )  # fmt: skip
    assert cp.returncode == 0, cp.stdout + cp.stderr
    report: dict[str, Any] = json.loads(cp.stdout)
    assert report["status"] == "ok"
    assert_fresh_equals_prod(lab)
