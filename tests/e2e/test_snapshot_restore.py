"""Snapshot prod and restore it onto the fresh host: issues 6 and 7 "Done when", against the lab
(real sshd, Docker Engine, PostgreSQL; local storage here, SeaweedFS in test_s3_snapshot)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import treesig
from tests.lab.api import Lab
from vkbackup import catalog
from vkbackup.config import load_config
from vkbackup.crypto import load_identity_file
from vkbackup.manifest import Manifest, open_private
from vkbackup.storage import open_storage

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = str(REPO / "restore-playbooks" / "visualkit.toml")
SECRET_FILES = [
    "/opt/platform-api/.env",
    "/opt/vk-agent/.env",
    "/opt/chatwoot/.env",
    "/opt/janus/.env",
    "/opt/janus/config/janus.jcfg",
]
CONFIG_FILES = [
    "/etc/caddy/Caddyfile",
    "/opt/chatwoot/docker-compose.yml",
    "/opt/platform-api/docker-compose.yml",
    "/opt/vk-agent/docker-compose.yml",
    "/opt/janus/docker-compose.yml",
]
VOLUMES = ["chatwoot_storage_data", "chatwoot_redis_data"]


def latest(lab: Lab) -> tuple[Manifest, dict[str, Any]]:
    cfg = load_config(lab.config_path)
    storage = open_storage(cfg.storage)
    m = catalog.resolve(storage, "latest", "prod")
    return m, open_private(m, load_identity_file(lab.identity))


@pytest.fixture(scope="module")
def snap(lab: Lab) -> dict[str, Any]:
    # change the storage volume, so that this snapshot copies it (stopping its users)
    # even when an earlier test left an identical tree in the lab's storage
    # Two snapshots of a quiet database: the second references the first one's dump
    # (no transaction was given an id since), so the restore tests below restore a
    # reused dump.
    mp = "$(docker volume inspect -f '{{.Mountpoint}}' chatwoot_storage_data)"
    doc: dict[str, Any] = {}
    for _ in range(2):
        lab.ssh("prod", f"date +%s%N > {mp}/snapshot-restore-test.txt")
        cp = lab.vkbackup("snapshot", "prod", "--json")
        assert cp.returncode == 0, cp.stderr
        doc = json.loads(cp.stdout)
        assert doc["status"] == "complete"
    db = next(s for s in doc["sources"] if s["name"] == "chatwoot-db")
    assert db["bytes_new"] == 0 and db["bytes_reused"] > 0, db
    return doc


def test_snapshot_records_seeded_row_counts(lab: Lab, snap: dict[str, Any]) -> None:
    m, private = latest(lab)
    assert m.id == snap["id"]
    counts = private["sources"]["chatwoot-db"]["meta"]["row_counts"]
    assert counts == lab.row_counts
    assert private["sources"]["chatwoot-db"]["meta"]["server"]["major"] == 15


def test_every_container_runs_after_snapshot(lab: Lab, snap: dict[str, Any]) -> None:
    running = lab.running_containers("prod")
    for name in lab.containers:
        assert name in running, f"{name} is not running on prod after the snapshot"
    stopped = {s["name"]: s["downtime_seconds"] for s in snap["sources"]}
    assert stopped["chatwoot-storage"] is not None and stopped["chatwoot-storage"] > 0


def test_stock_tools_open_every_object(lab: Lab, snap: dict[str, Any], tmp_path: Path) -> None:
    m, _ = latest(lab)
    roles = set()
    for o in m.objects:
        path = lab.storage_dir / o.key
        age = f"age -d -i {lab.identity} < {path}"
        if o.role == "pg-dump":
            # pg_restore stops reading once it has the table of contents: give it a file
            dump = tmp_path / "dump.pgdump"
            subprocess.run(["bash", "-c", f"{age} > {dump}"], check=True)
            out = subprocess.run(
                ["pg_restore", "--list", str(dump)], capture_output=True, text=True, check=True
            ).stdout
            assert "TABLE DATA public messages" in out
        elif o.role == "pg-globals":
            out = subprocess.run(
                ["bash", "-c", f"set -o pipefail; {age}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "CREATE ROLE chatwoot_app" in out
        elif o.role in ("tar", "tar-incremental", "image"):
            unpack = {"gzip": "gzip -dc", "zstd": "zstd -qdc", "none": "cat"}[o.compression]
            listing = "tar -tvf -" if o.role != "tar-incremental" else "tar -tvf - -G"
            out = subprocess.run(
                ["bash", "-c", f"set -o pipefail; {age} | {unpack} | {listing}"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            assert out.strip()
            if o.role == "image":
                assert "manifest.json" in out
        roles.add(o.role)
    # the fixture's second snapshot holds the changed storage volume as an incremental
    assert roles == {"pg-dump", "pg-globals", "tar", "tar-incremental", "image"}


def test_secrets_never_in_storage_or_manifest_plaintext(lab: Lab, snap: dict[str, Any]) -> None:
    values = [v.encode() for v in lab.secret_values if len(v) >= 8]
    assert values
    for f in lab.storage_dir.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            for v in values:
                assert v not in data, f"a .env value is in plaintext in {f}"


def prod_state(lab: Lab, host: str) -> dict[str, Any]:
    return {
        "checksums": lab.table_checksums(host),
        "schema": treesig.db_schema(lab, host),
        "roles": treesig.db_roles(lab, host),
        "sequences": treesig.db_sequences(lab, host),
        "volumes": {v: treesig.volume_signature(lab, host, v) for v in VOLUMES},
        "files": treesig.file_signature(lab, host, SECRET_FILES + CONFIG_FILES),
    }


def assert_fresh_equals_prod(lab: Lab) -> dict[str, Any]:
    """After a restore onto fresh: every container of prod runs there, every health URL
    answers, and fresh's state (prod_state: table digests, schema, roles, sequences,
    volume trees, secret and config files) equals prod's. Return fresh's state."""
    running = lab.running_containers("fresh")
    for name in lab.containers:
        assert name in running, f"{name} does not run on the fresh host"
    assert all(code == 200 for code in lab.health("fresh").values()), lab.health("fresh")
    want = prod_state(lab, "prod")
    got = prod_state(lab, "fresh")
    for key in ("checksums", "schema", "roles", "sequences", "files"):
        assert got[key] == want[key], f"{key} differ"
    for v in VOLUMES:
        assert got["volumes"][v] == want["volumes"][v], f"volume {v} differs"
    return got


def restore(lab: Lab, *extra: str) -> subprocess.CompletedProcess[str]:
    return lab.vkbackup(
        "restore", "latest", "--host", "prod", "--to", "fresh", "--playbook", PLAYBOOK,
        "--yes", "--json", *extra,
    )  # fmt: skip


def test_restore_onto_fresh_host_is_identical(fresh_lab: Lab, snap: dict[str, Any]) -> None:
    lab = fresh_lab
    cp = restore(lab)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    report = json.loads(cp.stdout)
    assert report["status"] == "ok"
    assert report["rto_seconds"] > 0
    assert [r.split()[1] for r in report["dns"]] == [
        f"{n}.visualkit.live" for n in ("api", "agent", "janus", "cdn", "support")
    ]
    got = assert_fresh_equals_prod(lab)
    # running it again changes nothing
    again = restore(lab)
    assert again.returncode == 0, again.stderr
    rep2 = json.loads(again.stdout)
    resumable = [s for s in rep2["steps"] if s["kind"] not in ("preflight", "health", "dns")]
    resumable = [s for s in resumable if s["kind"] != "ensure-docker"]
    assert {s["kind"] for s in resumable} >= {"files", "image", "volume", "database", "start"}
    for step in resumable:  # every step, not only the last of each kind
        assert step["status"] == "already-done", step
    assert prod_state(lab, "fresh") == got


def test_restore_onto_prod_without_force_is_refused(lab: Lab, snap: dict[str, Any]) -> None:
    before = lab.table_checksums("prod")
    cp = lab.vkbackup(
        "restore", "latest", "--host", "prod", "--to", "prod", "--playbook", PLAYBOOK, "--yes"
    )
    assert cp.returncode == 1
    assert "refusing to restore over a target that is not empty" in cp.stderr
    assert "chatwoot-postgres-1" in cp.stderr
    assert lab.table_checksums("prod") == before


def test_restore_killed_midway_then_completes(fresh_lab: Lab, snap: dict[str, Any]) -> None:
    lab = fresh_lab
    argv = [
        sys.executable, "-m", "vkbackup", "--config", str(lab.config_path), "restore", "latest",
        "--host", "prod", "--to", "fresh", "--playbook", PLAYBOOK, "--yes",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = f"/var/lib/vkbackup/restore/{snap['id']}.json"
    deadline = time.time() + 300
    done: dict[str, Any] = {}
    while time.time() < deadline and proc.poll() is None:
        cp = lab.ssh("fresh", f"cat {state} 2>/dev/null || true", check=False)
        if cp.stdout.strip():
            done = json.loads(cp.stdout)["done"]
            if len(done) >= 3:
                break
        time.sleep(0.3)
    assert proc.poll() is None, "the restore finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(done) >= 3
    cp2 = restore(lab)
    assert cp2.returncode == 0, cp2.stderr
    report = json.loads(cp2.stdout)
    statuses = [s["status"] for s in report["steps"]]
    assert "already-done" in statuses and "done" in statuses
    assert lab.table_checksums("fresh") == lab.table_checksums("prod")
    assert treesig.volume_signature(lab, "fresh", VOLUMES[0]) == treesig.volume_signature(
        lab, "prod", VOLUMES[0]
    )


def test_snapshot_killed_midway_restarts_containers(lab: Lab, snap: dict[str, Any]) -> None:
    before = [
        sid
        for _, sid in catalog.list_snapshots(
            open_storage(load_config(lab.config_path).storage), "prod"
        )
    ]
    # a changed volume (else it is referenced, not copied, and nothing is stopped), and a
    # 200 MB random file so the copy lasts long enough to be killed midway
    mp = "$(docker volume inspect -f '{{.Mountpoint}}' chatwoot_storage_data)"
    lab.ssh("prod", f"head -c 200000000 /dev/urandom > {mp}/kill-test.bin")
    argv = [
        sys.executable, "-m", "vkbackup", "--config", str(lab.config_path), "snapshot", "prod",
        "--only", "chatwoot-storage",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen_stopped = False
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if "chatwoot-chatwoot-1" not in lab.running_containers("prod"):
            seen_stopped = True
            break
        time.sleep(0.1)
    assert seen_stopped, "never saw the container stopped (snapshot too quick to interrupt)"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while time.time() < deadline:
        running = lab.running_containers("prod")
        if {"chatwoot-chatwoot-1", "chatwoot-chatwoot-sidekiq-1"} <= set(running):
            break
        time.sleep(1)
    else:
        pytest.fail("the guard did not start the stopped containers again")
    lab.ssh("prod", f"rm -f {mp}/kill-test.bin")
    storage = open_storage(load_config(lab.config_path).storage)
    after = [sid for _, sid in catalog.list_snapshots(storage, "prod")]
    assert after == before, "a killed snapshot must not be listed"
    # the dead run's lock is stale: reported, and taken over only with --break-lock
    cp = lab.vkbackup("snapshot", "prod", "--only", "secrets")
    assert cp.returncode == 1 and "stale lock" in cp.stderr
    cp = lab.vkbackup("snapshot", "prod", "--only", "secrets", "--break-lock")
    assert cp.returncode == 0, cp.stderr
