"""Issue 20 "Done when": a snapshot encrypted to a post-quantum recipient restores onto
the fresh host. The lab config with one change, an age1pq1... key in
encryption.recipients (and its identity for the restore); the same prod, the same
bare fresh host. Every object the snapshot stored is opened by stock age 1.3.2 with
the PQ identity (the classic identity opens none), and the restored database,
volume and secret files equal prod's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e import treesig
from tests.lab.api import Lab
from tests.unit.crypto.age13 import age13_tool

SECRETS = ["/opt/chatwoot/.env", "/opt/platform-api/.env", "/opt/janus/config/janus.jcfg"]


def test_snapshot_to_a_pq_recipient_restores_onto_fresh(fresh_lab: Lab, tmp_path: Path) -> None:
    lab = fresh_lab
    identity = tmp_path / "pq-identity.txt"
    cp = lab.vkbackup("keys", "generate", "--pq", "--out", str(identity))
    assert cp.returncode == 0, cp.stderr
    recipient = re.search(r"age1pq1[0-9a-z]+", cp.stdout + cp.stderr)
    assert recipient is not None, cp.stdout + cp.stderr
    text = lab.config_path.read_text()
    text = re.sub(r'(?m)^path = ".*"$', f'path = "{tmp_path / "store"}"', text, count=1)
    text = re.sub(r"(?m)^recipients = \[.*\]$", f'recipients = ["{recipient.group(0)}"]', text)
    text = re.sub(r'(?m)^identity = ".*"$', f'identity = "{identity}"', text)
    cfg = tmp_path / "vkbackup.toml"
    cfg.write_text(text)
    cfg.chmod(0o600)

    def vk(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "vkbackup", "--config", str(cfg), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)

    snap = vk("snapshot", "prod", "--json")
    assert snap.returncode == 0, snap.stderr
    # every stored object is a PQ age file: stock age 1.3.2 opens it with the PQ
    # identity, and the lab's classic identity opens none of them
    age13 = age13_tool("age")
    objects = sorted((tmp_path / "store" / "data").rglob("*.age"))
    assert objects
    for obj in objects:
        ok = subprocess.run([age13, "-d", "-i", str(identity), str(obj)], capture_output=True)
        assert ok.returncode == 0, (obj, ok.stderr)
        bad = subprocess.run([age13, "-d", "-i", str(lab.identity), str(obj)], capture_output=True)
        assert bad.returncode != 0, obj
        assert b"mlkem768x25519" in obj.read_bytes()[:400]
    cp = vk(
        "restore", "latest", "--host", "prod", "--to", "fresh", "--yes", "--json",
        "--only", "secrets", "--only", "config", "--only", "chatwoot-storage",
        "--only", "chatwoot-db",
        "--only", "start:chatwoot:postgres", "--only", "images",
    )  # fmt: skip
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    report = json.loads(cp.stdout)
    assert report["status"] == "ok"
    assert any("row counts" in v for v in report["verified"])
    assert lab.table_checksums("fresh") == lab.table_checksums("prod")
    assert treesig.volume_signature(
        lab, "fresh", "chatwoot_storage_data"
    ) == treesig.volume_signature(lab, "prod", "chatwoot_storage_data")
    assert treesig.file_signature(lab, "fresh", SECRETS) == treesig.file_signature(
        lab, "prod", SECRETS
    )
