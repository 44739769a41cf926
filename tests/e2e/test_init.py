"""Issue 6 "Done when": `vkbackup init` on prod writes a config that, unedited, snapshots
everything prod runs, into a local directory and into SeaweedFS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.lab.api import Lab


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", *args],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip


def base_config(lab: Lab, tmp: Path, s3: bool) -> Path:
    """A config with only storage and encryption, as a user has before `init`."""
    if s3:
        text = lab.s3_config_path.read_text().split("[hosts.", 1)[0]
    else:
        text = f'[storage]\npath = "{tmp / "store"}"\n\n[encryption]\n'
        text += f'recipients = ["{lab.recipient}"]\nidentity = "{lab.identity}"\n'
    p = tmp / "base.toml"
    p.write_text(text)
    p.chmod(0o600)
    return p


@pytest.mark.parametrize("s3", [False, True], ids=["local", "s3"])
def test_init_writes_a_config_that_snapshots_everything(lab: Lab, tmp_path: Path, s3: bool) -> None:
    base = base_config(lab, tmp_path, s3)
    known = tmp_path / "known_hosts"
    out = tmp_path / "prod.toml"
    cp = run(
        "--config", str(base), "init", "root@127.0.0.1:2222", "--name", "prod",
        "--key-file", str(lab.key_file), "--known-hosts", str(known), "--yes", "--out", str(out),
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    assert "offers host key" in cp.stderr and "SHA256:" in cp.stderr
    assert "[127.0.0.1]:2222" in known.read_text()
    doc = tomllib.loads(out.read_text())
    sources = doc["hosts"]["prod"]["sources"]
    kinds = {(s["type"], s.get("volume") or s.get("database") or s["name"]) for s in sources}
    assert ("postgres", "chatwoot_production") in kinds
    for volume in ("chatwoot_storage_data", "chatwoot_redis_data"):
        assert ("docker-volume", volume) in kinds, volume
    # the database's raw data directory is dumped, not copied
    assert ("docker-volume", "chatwoot_postgres_data") not in kinds
    files = [p for s in sources if s["type"] == "files" for p in s["paths"]]
    for path in ("/opt/platform-api/.env", "/opt/vk-agent/.env", "/opt/chatwoot/.env"):
        assert path in files
    assert "/etc/caddy/Caddyfile" in files
    secrets_src = next(s for s in sources if "/opt/chatwoot/.env" in s.get("paths", []))
    assert secrets_src["secret"] is True
    images = next(s for s in sources if s["type"] == "docker-image")["images"]
    assert set(lab.images) <= set(images)
    # init keeps the current config's signing key (the S3 base has the lab's), or
    # creates one beside the new config and configures it
    key = lab.paths.signing_key if s3 else tmp_path / "signing_ed25519"
    assert doc["signing"]["key"] == str(key)
    assert key.stat().st_mode & 0o777 == 0o600
    assert "signing: key" in run("--config", str(out), "config", "check").stdout
    # init never copies credentials into a config: S3 keys come from the standard AWS
    # chain, here the environment, as on a real backup machine
    env = dict(os.environ)
    if s3:
        env["AWS_ACCESS_KEY_ID"] = lab.s3.access_key
        env["AWS_SECRET_ACCESS_KEY"] = lab.s3.secret_key
        assert lab.s3.secret_key not in out.read_text()
    snap = run("--config", str(out), "snapshot", "prod", "--json", env=env)
    assert snap.returncode == 0, snap.stderr
    result = json.loads(snap.stdout)
    assert result["status"] == "complete"
    if not s3:  # the snapshot is signed: its signature sits beside the manifest
        assert (tmp_path / "store" / "snapshots" / "prod" / f"{result['id']}.json.sig").exists()
    assert all(s["status"] == "ok" for s in result["sources"])
    # every container runs again afterwards
    running = lab.running_containers("prod")
    for name in lab.containers:
        assert name in running
