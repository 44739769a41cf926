"""Issue 17, hooks, against the lab: a before_snapshot hook that exits 1 stops the
snapshot before anything is stopped. prod's containers named in the volume
source's stop list keep running (same start time: never stopped and started
again), and `list` shows no snapshot and no lock is left."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.lab.api import Lab

SOURCE = "chatwoot-storage"  # docker-volume, stop = these containers (tests/lab/vkconfig.py)
STOPPED = ["chatwoot-chatwoot-1", "chatwoot-chatwoot-sidekiq-1"]


def started_at(lab: Lab) -> dict[str, str]:
    fmt = "{{.Name}} {{.State.Running}} {{.State.StartedAt}}"
    out = lab.ssh("prod", f"docker inspect -f '{fmt}' {' '.join(STOPPED)}").stdout
    return {name.lstrip("/"): rest for name, rest in (ln.split(" ", 1) for ln in out.splitlines())}


def vk(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "vkbackup", "--config", str(cfg), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def test_failing_before_snapshot_hook_stops_no_container(lab: Lab, tmp_path: Path) -> None:
    store = tmp_path / "store"
    text = lab.config_path.read_text()
    text = re.sub(r'(?m)^path = ".*"$', f'path = "{store}"', text, count=1)  # own storage
    text += '\n[hosts.prod.hooks]\nbefore_snapshot = ["echo not now >&2; exit 1"]\n'
    cfg = tmp_path / "vkbackup.toml"
    cfg.write_text(text)
    cfg.chmod(0o600)
    before = started_at(lab)
    assert all(v.startswith("true ") for v in before.values()), before

    cp = vk(cfg, "snapshot", "prod", "--only", SOURCE)
    assert cp.returncode == 1, cp.stderr
    assert "prod: hook hosts.prod.hooks.before_snapshot[0] exited with status 1" in cp.stderr
    assert "not now" in cp.stderr

    assert started_at(lab) == before  # still running, never restarted
    listing = vk(cfg, "list", "prod", "--json")
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout) == []
    assert not (store / "locks" / "prod.lock").exists()
