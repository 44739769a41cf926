"""The hostile-bucket suite (issue 16): someone who can write to the storage, but
holds neither the signing key nor an age identity, edits, re-dates, copies,
unsigns or swaps what is there. Every command refuses what it cannot trust and
names the file; nothing forged is restored, listed as a snapshot, or counted as
a verify pass.

Two real, complete snapshots of the lab's prod (a CDN file changes between
them), taken through the CLI with the lab's [signing] key. Each
test works on its own copy of the storage (hard links; every write below
replaces a file, never edits one in place, so the shared snapshot stays clean).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.lab.api import Lab
from vkbackup import layout, sshsig

SOURCES = ("--only", "secrets", "--only", "config")
CDN_FILE = "/var/www/cdn/hostile-bucket-probe.txt"


def run(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(cfg), *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def write(path: Path, data: bytes) -> None:
    """Replace *path* (a new inode: the other copies' hard links keep the old bytes)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class Base:
    store: Path
    text: str  # the lab config, storage path to be replaced
    first: str
    second: str


@dataclass
class Copy:
    cfg: Path
    store: Path
    first: str
    second: str

    def file(self, key: str) -> Path:
        return self.store.joinpath(*key.split("/"))

    def manifest(self, sid: str) -> Path:
        return self.file(layout.manifest_key("prod", sid))


@pytest.fixture(scope="module")
def base(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Base]:
    root = tmp_path_factory.mktemp("hostile-bucket")
    store = root / "store"
    text = lab.config_path.read_text()
    assert "[signing]" in text, "the lab config signs its snapshots"
    cfg = root / "vkbackup.toml"
    cfg.write_text(re.sub(r'(?m)^path = ".*"$', f'path = "{store}"', text, count=1))
    ids = []
    try:
        for n in (1, 2):
            lab.ssh("prod", f"echo probe {n} > {CDN_FILE}")
            r = run(cfg, "snapshot", "prod", "--json")  # complete: `latest` may take it
            assert r.returncode == 0, r.stderr
            ids.append(json.loads(r.stdout)["id"])
    finally:
        lab.ssh("prod", f"rm -f {CDN_FILE}")
    yield Base(store, text, ids[0], ids[1])


@pytest.fixture
def bucket(base: Base, tmp_path: Path) -> Copy:
    store = tmp_path / "store"
    shutil.copytree(base.store, store, copy_function=os.link)
    cfg = tmp_path / "vkbackup.toml"
    cfg.write_text(re.sub(r'(?m)^path = ".*"$', f'path = "{store}"', base.text, count=1))
    return Copy(cfg, store, base.first, base.second)


def restore_dry(b: Copy, sid: str) -> subprocess.CompletedProcess[str]:
    return run(b.cfg, "restore", sid, "--to", "fresh", "--dry-run")


def test_the_snapshots_are_signed_and_ssh_keygen_checks_them_by_hand(
    lab: Lab, bucket: Copy, tmp_path: Path
) -> None:
    public = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(lab.paths.signing_key)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'vkbackup namespaces="vkbackup" {public}\n')
    for sid in (bucket.first, bucket.second):
        m = bucket.manifest(sid)
        argv = ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "vkbackup"]
        argv += ["-n", "vkbackup", "-s", str(m) + ".sig"]
        ok = subprocess.run(argv, stdin=m.open("rb"), capture_output=True, check=False)
        assert ok.returncode == 0, ok.stderr
    assert restore_dry(bucket, bucket.second).returncode == 0


def test_an_edited_manifest_is_refused_by_every_reader(bucket: Copy) -> None:
    key = layout.manifest_key("prod", bucket.second)
    doc: dict[str, Any] = json.loads(bucket.manifest(bucket.second).read_bytes())
    doc["objects"] = [o for o in doc["objects"] if o["source"] != "secrets"]
    write(bucket.manifest(bucket.second), json.dumps(doc).encode())
    for r in (
        restore_dry(bucket, bucket.second),
        run(bucket.cfg, "verify", bucket.second),
        run(bucket.cfg, "show", bucket.second, "--public"),
    ):
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"{key}: BAD signature" in r.stderr
    listed = run(bucket.cfg, "list", "prod", "--json")
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows[bucket.second]["status"] == "unreadable"
    assert f"{key}: BAD signature" in rows[bucket.second]["error"]
    assert rows[bucket.first]["status"] == "complete"


def test_an_unsigned_manifest_is_refused_and_not_reused(bucket: Copy) -> None:
    key = layout.manifest_key("prod", bucket.second)
    bucket.file(key + ".sig").unlink()
    r = restore_dry(bucket, bucket.second)
    assert r.returncode == 1
    assert f"{key}: not signed ({key}.sig is missing): refused" in r.stderr
    # the next snapshot takes nothing from it (nor from anything it could forge)
    snap = run(bucket.cfg, "snapshot", "prod", *SOURCES, "--json")
    assert snap.returncode == 0, snap.stderr
    assert f"{key}: nothing is reused from it" in snap.stderr
    third = json.loads(snap.stdout)["id"]
    doc = json.loads(bucket.manifest(third).read_bytes())
    assert all(o["uploaded_in"] in ("", bucket.first) for o in doc["objects"])


def test_a_manifest_signed_by_another_key_is_refused(bucket: Copy) -> None:
    key = layout.manifest_key("prod", bucket.second)
    body = bucket.manifest(bucket.second).read_bytes()
    write(bucket.file(key + ".sig"), sshsig.sign(Ed25519PrivateKey.generate(), body))
    r = restore_dry(bucket, bucket.second)
    assert r.returncode == 1
    assert re.search(rf"{re.escape(key)}: signed by SHA256:\S+, which is not in", r.stderr)


def test_an_old_manifest_copied_under_a_newer_id_is_not_latest(bucket: Copy) -> None:
    newer = layout.new_snapshot_id(layout.snapshot_time(bucket.second) + timedelta(seconds=1))
    newer_key = layout.manifest_key("prod", newer)
    src = bucket.manifest(bucket.first)
    shutil.copyfile(src, bucket.file(newer_key))
    shutil.copyfile(str(src) + ".sig", bucket.file(newer_key + ".sig"))
    assert newer > bucket.second
    r = run(bucket.cfg, "restore", "latest", "--host", "prod", "--to", "fresh", "--dry-run")
    assert r.returncode == 1
    assert f"{newer_key}: manifest says host 'prod' id '{bucket.first}'" in r.stderr
    # re-dated inside as well: the signature no longer checks
    doc = json.loads(src.read_bytes())
    doc["id"] = newer
    write(bucket.file(newer_key), json.dumps(doc).encode())
    r = run(bucket.cfg, "restore", "latest", "--host", "prod", "--to", "fresh", "--dry-run")
    assert r.returncode == 1
    assert f"{newer_key}: BAD signature" in r.stderr


def test_an_object_swapped_with_another_snapshots_object_is_named(bucket: Copy) -> None:
    prefix = f"data/prod/{bucket.second}/config/"
    mine = os.listdir(bucket.file(prefix))
    assert mine, "the second snapshot uploaded its own config object (the CDN file changed)"
    name = mine[0]
    other = bucket.file(f"data/prod/{bucket.first}/config/{name}")
    write(bucket.file(prefix + name), other.read_bytes())
    r = run(bucket.cfg, "verify", bucket.second)
    assert r.returncode == 1
    assert prefix + name in r.stdout + r.stderr
    assert "sha256" in r.stdout + r.stderr


def test_a_future_dated_id_is_ignored_by_list_and_refused_by_restore(bucket: Copy) -> None:
    future = "20991231T235959Z-0000"
    key = layout.manifest_key("prod", future)
    doc = json.loads(bucket.manifest(bucket.second).read_bytes())
    doc["id"] = future
    write(bucket.file(key), json.dumps(doc).encode())
    listed = run(bucket.cfg, "list", "prod", "--json")
    assert listed.returncode == 0
    assert future not in {row["id"] for row in json.loads(listed.stdout)}
    assert f"{key}: dated 2099-12-31T23:59:59Z, more than 10 minutes in the future" in (
        listed.stderr
    )
    r = restore_dry(bucket, future)
    assert r.returncode == 1 and f"{key}: dated 2099-12-31T23:59:59Z" in r.stderr


def test_a_forged_verify_record_is_no_pass(bucket: Copy) -> None:
    key = layout.verify_key("prod", bucket.second)
    forged = {
        "format": "vkbackup-verify/1",
        "host": "prod",
        "id": bucket.second,
        "time": "2026-11-30T03:00:00+00:00",
        "ok": True,
        "bad": [],
    }
    bucket.file(key).parent.mkdir(parents=True, exist_ok=True)
    write(bucket.file(key), json.dumps(forged).encode())
    listed = run(bucket.cfg, "list", "prod", "--json")
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows[bucket.second]["last_verified"] is None
    assert f"{key}: not signed" in listed.stderr
    # a real verify writes a signed record that list then shows
    assert run(bucket.cfg, "verify", bucket.second).returncode == 0
    rows = {row["id"]: row for row in json.loads(run(bucket.cfg, "list", "--json").stdout)}
    assert rows[bucket.second]["last_verified"]["ok"] is True
