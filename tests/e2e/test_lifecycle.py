"""Issue 8 against the lab: verify --deep restores the dump into a throwaway PostgreSQL on a
real host; a drill restores onto the fresh host and reports RTO and RPO; list shows it.
Issue 17: `check` fails on the stale host before, and passes after snapshot, verify and
drill."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lab.api import Lab

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = str(REPO / "restore-playbooks" / "visualkit.toml")


@pytest.fixture
def cfg(lab: Lab, tmp_path: Path) -> Path:
    text = lab.config_path.read_text()
    text = re.sub(r'(?m)^path = ".*"$', f'path = "{tmp_path / "store"}"', text, count=1)
    p = tmp_path / "vkbackup.toml"
    p.write_text(text)
    return p


def run(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(cfg), *args],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip


def test_verify_deep_passes_then_names_a_damaged_object(lab: Lab, cfg: Path) -> None:
    snap = run(cfg, "snapshot", "prod", "--json")
    assert snap.returncode == 0, snap.stderr
    sid = json.loads(snap.stdout)["id"]
    ok = run(cfg, "verify", "--latest", "--deep", "--on", "prod", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    doc: list[dict[str, Any]] = json.loads(ok.stdout)
    assert doc[0]["deep"] is True and doc[0]["bad"] == []
    # no throwaway container is left on prod
    names = lab.ssh("prod", "docker ps -a --format '{{.Names}}'").stdout
    assert "vkbackup-verify" not in names
    store = cfg.parent / "store"
    dump = next(store.glob(f"data/prod/{sid}/chatwoot-db/dump.pgdump.age"))
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))
    bad = run(cfg, "verify", "--latest", "--deep", "--on", "prod")
    assert bad.returncode == 1
    assert f"data/prod/{sid}/chatwoot-db/dump.pgdump.age" in bad.stdout + bad.stderr


def test_drill_reports_rto_and_rpo_and_tears_down(
    fresh_lab: Lab, cfg: Path, tmp_path: Path
) -> None:
    lab = fresh_lab
    (tmp_path / "store").mkdir()  # an empty storage: nothing on record yet
    stale = run(cfg, "check", "--host", "prod", "--json")
    assert stale.returncode == 1, stale.stderr
    doc = json.loads(stale.stdout)
    assert not doc["ok"]
    assert [(c["kind"], c["stale"]) for c in doc["hosts"][0]["checks"]] == [
        ("snapshot", True), ("verify", True), ("drill", True),
    ]  # fmt: skip
    assert "host prod" in stale.stderr
    assert run(cfg, "snapshot", "prod").returncode == 0
    reports = tmp_path / "reports"
    cp = run(
        cfg, "drill", "--to", "fresh", "--host", "prod", "--playbook", PLAYBOOK,
        "--report", str(reports), "--teardown", "--json",
    )  # fmt: skip
    assert cp.returncode == 0, cp.stdout[-2000:] + cp.stderr[-2000:]
    doc = json.loads(cp.stdout)
    assert doc["status"] == "ok"
    assert doc["rto_seconds"] > 0 and doc["rpo_seconds"] >= 0
    assert any("row counts" in v for v in doc["restore"]["verified"])
    kinds = {p.suffix for p in reports.iterdir()}
    assert kinds == {".md", ".json", ".html"}
    md = next(reports.glob("*.md")).read_text()
    assert "RTO" in md and "RPO" in md and "PASSED" in md
    html = next(reports.glob("*.html")).read_text()
    assert "<table>" in html and "database:chatwoot-db" in html
    # the drill rebuilt the whole server, and its report lists every host step with
    # its time: the RTO includes installing Docker, Caddy and UFW on the bare host
    host_steps = [s for s in doc["restore"]["steps"] if s["kind"].startswith("host-")]
    assert sorted(s["id"] for s in host_steps) == [
        "host-files:host", "host-files:host:docker", "host-firewall:host",
        "host-packages:host", "host-packages:host:docker", "host-services:host",
        "host-users:host",
    ]  # fmt: skip
    assert all(s["status"] == "done" and s["seconds"] >= 0 for s in host_steps)
    for s in host_steps:
        assert s["id"] in md and s["id"] in html
    # teardown: nothing of the stack is left on the scratch host
    assert lab.running_containers("fresh") == []
    # the drill is recorded: a second drill does not warn about drill age
    listing = run(cfg, "list", "prod")
    assert listing.returncode == 0 and "complete" in listing.stdout
    verified = run(cfg, "verify", "--latest", "--host", "prod")
    assert verified.returncode == 0, verified.stderr
    fresh = run(cfg, "check", "--host", "prod", "--json")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert json.loads(fresh.stdout)["stale"] == []
