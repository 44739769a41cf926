"""Hooks as a user meets them: `vkbackup snapshot` and `vkbackup restore` in a
subprocess, over SSH to a real sshd on loopback, local storage, and hooks that
are real commands run on that "host" (and on_failure on this machine).

* an after_snapshot hook that fails: exit 3, the hook named; `list` shows the
  snapshot complete.
* a before_snapshot hook that exits 1: exit 1 naming host, hook, status and
  stderr; `list` shows nothing new, no lock is left; on_failure wrote its
  environment to a file.
* a before_restore hook that exits 1: exit 1, nothing written on the target
  (no resume state, no restored file), the after hook did not run.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.transport.conftest import Sshd
from vkbackup.crypto import generate_identity, write_identity_file


def dump_env(out: Path) -> str:
    code = (
        "import json, os, sys; json.dump({k: v for k, v in os.environ.items() "
        "if k.startswith('VKBACKUP_')}, open(sys.argv[1], 'w'))"
    )
    return shlex.join([sys.executable, "-c", code, str(out)])


def toml_list(items: list[str]) -> str:
    return json.dumps(items)  # a JSON array of strings is a TOML array


def write_config(tmp: Path, sshd: Sshd, src: Path, hooks: dict[str, list[str]]) -> Path:
    (tmp / "store").mkdir()
    ident = generate_identity()
    id_file = tmp / "identity.txt"
    write_identity_file(id_file, ident)
    lines = [f"{k} = {toml_list(v)}" for k, v in hooks.items()]
    lines.append(f"on_failure = {toml_list([dump_env(tmp / 'failure.json')])}")
    cfg = tmp / "vkbackup.toml"
    cfg.write_text(
        f"""
[storage]
path = "{tmp / "store"}"

[encryption]
recipients = ["{ident.recipient()}"]
identity = "{id_file}"

[hosts.box]
address = "127.0.0.1"
port = {sshd.port}
key_file = "{sshd.client_key}"
known_hosts = "{sshd.known_hosts}"

[[hosts.box.sources]]
type = "files"
name = "etc"
paths = ["{src}/*"]

[hosts.box.hooks]
"""
        + "\n".join(lines)
        + "\n"
    )
    return cfg


def vk(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VKBACKUP_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(cfg), *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "app.conf").write_text("a = 1\n")
    return d


def failure_env(tmp: Path) -> dict[str, str] | None:
    path = tmp / "failure.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_failing_after_hook_exits_3(tmp_path: Path, sshd: Sshd, src: Path) -> None:
    ran = tmp_path / "ran"
    cfg = write_config(
        tmp_path,
        sshd,
        src,
        {
            "before_snapshot": [f"echo before >> {ran}"],
            "after_snapshot": ["echo 'cache warm failed' >&2; exit 2", f"echo after >> {ran}"],
        },
    )
    cp = vk(cfg, "snapshot", "--json")
    assert cp.returncode == 3, cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["status"] == "partial" and len(doc["hook_errors"]) == 1
    assert "after_snapshot hooks failed" in cp.stderr
    assert "hosts.box.hooks.after_snapshot[0] exited with status 2" in cp.stderr
    assert "cache warm failed" in cp.stderr  # logged at info, and in the error
    assert ran.read_text() == "before\nafter\n"
    listing = vk(cfg, "list", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert [(r["id"], r["status"]) for r in rows] == [(doc["id"], "complete")]
    env = failure_env(tmp_path)
    assert env is not None and env["VKBACKUP_STATUS"] == "partial"
    assert env["VKBACKUP_SNAPSHOT"] == doc["id"]


def test_failing_before_hook_exits_1_and_lists_nothing(
    tmp_path: Path, sshd: Sshd, src: Path
) -> None:
    ran = tmp_path / "ran"
    cfg = write_config(
        tmp_path,
        sshd,
        src,
        {
            "before_snapshot": ["echo 'chatwoot busy' >&2; exit 1"],
            "after_snapshot": [f"echo after >> {ran}"],
        },
    )
    cp = vk(cfg, "snapshot")
    assert cp.returncode == 1, cp.stderr
    err = cp.stderr
    assert (
        "vkbackup: error: box: hook hosts.box.hooks.before_snapshot[0] exited with status 1" in err
    )
    assert "chatwoot busy" in err and "nothing was stopped or written" in err
    assert "Traceback" not in err
    assert not ran.exists()
    listing = vk(cfg, "list", "--json")
    assert listing.returncode == 0 and json.loads(listing.stdout) == []
    assert not (tmp_path / "store" / "locks" / "box.lock").exists()
    env = failure_env(tmp_path)
    assert env is not None
    assert env["VKBACKUP_HOST"] == "box" and env["VKBACKUP_COMMAND"] == "snapshot"
    assert env["VKBACKUP_STATUS"] == "failed" and "VKBACKUP_SNAPSHOT" not in env
    assert "before_snapshot[0]" in env["VKBACKUP_ERROR"]
    assert "chatwoot busy" in env["VKBACKUP_ERROR"]


def test_failing_before_restore_hook_writes_nothing_on_the_target(
    tmp_path: Path, sshd: Sshd, src: Path
) -> None:
    ran = tmp_path / "ran"
    cfg = write_config(
        tmp_path,
        sshd,
        src,
        {
            "before_restore": [f"echo before >> {ran}", "echo 'target not ready' >&2; exit 1"],
            "after_restore": [f"echo after >> {ran}"],
        },
    )
    snap = vk(cfg, "snapshot", "--json")
    assert snap.returncode == 0, snap.stderr
    sid = json.loads(snap.stdout)["id"]
    (src / "app.conf").unlink()  # what a restore would write back
    state = Path("/var/lib/vkbackup/restore") / f"{sid}.json"
    cp = vk(cfg, "restore", "latest", "--to", "box", "--yes")
    assert cp.returncode == 1, cp.stderr
    assert "box: hook hosts.box.hooks.before_restore[1] exited with status 1" in cp.stderr
    assert "target not ready" in cp.stderr and "nothing was written on the target" in cp.stderr
    assert ran.read_text() == "before\n"  # the after hook did not run
    assert not (src / "app.conf").exists() and not state.exists()
    env = failure_env(tmp_path)
    assert env is not None
    assert env["VKBACKUP_COMMAND"] == "restore" and env["VKBACKUP_SNAPSHOT"] == sid
    assert env["VKBACKUP_TARGET"].endswith(f"@127.0.0.1:{sshd.port}")
