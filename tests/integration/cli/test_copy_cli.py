"""`vkbackup copy`, `--storage NAME` and `[snapshot] copy_after` as a user runs them
(issue 17, copies 3-2-1): a real process (`python -m vkbackup`, i.e.
`vkbackup.cli.main`), snapshots over SSH to a real sshd, local directories for
the storage and its copies, monitoring pings to a local HTTP server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.cli import test_snapshot_cli as snapshot_cli
from tests.integration.cli.test_snapshot_cli import Recorder, vk, write_config
from tests.integration.transport.conftest import Sshd
from vkbackup import layout

http = snapshot_cli.http  # the fixture: a local server that records monitoring's calls


def with_copies(cfg: Path, tmp: Path, *, copy_after: bool = False, broken: bool = False) -> None:
    text = cfg.read_text()
    if copy_after:
        text += "\n[snapshot]\ncopy_after = true\n"
    (tmp / "usb").mkdir()  # a copy's directory is made by hand: vkbackup never creates it
    text += f'\n[[copies]]\nname = "usb"\npath = "{tmp / "usb"}"\n'
    text += "[copies.retention]\nkeep_last = 1\n"
    if broken:  # a path under a regular file: it can never exist
        (tmp / "afile").write_text("x")
        text += f'\n[[copies]]\nname = "dead"\npath = "{tmp / "afile" / "copy"}"\n'
    cfg.write_text(text)


def test_copy_then_lose_the_primary_and_restore_from_the_copy(
    tmp_path: Path, sshd: Sshd, http: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.env").write_text("TOKEN=abc\n")
    cfg, _ = write_config(tmp_path, sshd, http, [str(src / "app.env")])
    with_copies(cfg, tmp_path)
    for _ in range(2):
        assert vk(cfg, "snapshot").returncode == 0
    ids = [r["id"] for r in json.loads(vk(cfg, "list", "--json").stdout)]
    cp = vk(cfg, "copy", "--all", "--json")
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert [(s["id"], s["status"]) for s in doc["snapshots"]] == [(i, "copied") for i in ids]
    # monitoring heard of the job "copy"
    assert any(p == "/hook" and b'"copy"' in body for _, p, body in Recorder.calls)
    again = vk(cfg, "copy", "--all")
    assert again.returncode == 0 and again.stdout.count(" already copied") == 2, again.stdout
    # the primary is gone: everything reads from the copy
    shutil.rmtree(tmp_path / "store")
    assert vk(cfg, "list").returncode == 10
    listing = vk(cfg, "--storage", "usb", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert [r["id"] for r in json.loads(listing.stdout)] == ids
    ver = vk(cfg, "verify", "--all", "--storage", "usb")
    assert ver.returncode == 0, ver.stderr + ver.stdout
    plan = vk(cfg, "--storage", "usb", "restore", "latest", "--to", "box", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert ids[-1] in plan.stdout + plan.stderr
    # the copy's own retention (keep_last = 1)
    pruned = vk(cfg, "--storage", "usb", "prune", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert not (tmp_path / "usb" / layout.manifest_key("box", ids[0])).exists()
    assert (tmp_path / "usb" / layout.manifest_key("box", ids[1])).exists()


def test_copy_after_snapshot_and_a_failing_copy_exits_3(
    tmp_path: Path, sshd: Sshd, http: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    cfg, _ = write_config(tmp_path, sshd, http, [str(src / "a.txt")])
    with_copies(cfg, tmp_path, copy_after=True, broken=True)
    cp = vk(cfg, "snapshot", "--json")
    assert cp.returncode == 3, cp.stderr
    assert "copy dead" in cp.stderr and "the snapshot stays" in cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["status"] == "complete"
    assert {(c["copy"], c["status"]) for c in doc["copies"]} == {
        ("usb", "copied"),
        ("dead", "failed"),
    }
    assert (tmp_path / "usb" / layout.manifest_key("box", doc["id"])).is_file()
    assert (tmp_path / "store" / layout.manifest_key("box", doc["id"])).is_file()


def test_copy_usage_errors_and_a_damaged_object(tmp_path: Path, sshd: Sshd, http: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a" * 5000)
    cfg, _ = write_config(tmp_path, sshd, http, [str(src / "a.txt")])
    with_copies(cfg, tmp_path)
    bad = vk(cfg, "--storage", "tape", "list")
    assert bad.returncode == 2 and "no copy named 'tape'" in bad.stderr and "usb" in bad.stderr
    assert vk(cfg, "copy", "--to", "tape").returncode == 2
    assert vk(cfg, "snapshot").returncode == 0
    objects = [p for p in (tmp_path / "store" / "data").rglob("*") if p.is_file()]
    data = bytearray(objects[0].read_bytes())
    data[100] ^= 0x01
    objects[0].write_bytes(bytes(data))
    cp = vk(cfg, "copy")
    assert cp.returncode == 1, cp.stderr
    key = objects[0].relative_to(tmp_path / "store").as_posix()
    assert key in cp.stderr and "Traceback" not in cp.stderr
    assert not (tmp_path / "usb" / key).exists()
    assert not list((tmp_path / "usb").rglob("*.json"))


def test_copy_killed_midway_then_rerun_completes(tmp_path: Path, sshd: Sshd, http: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(1024 * 1024))
    cfg, _ = write_config(tmp_path, sshd, http, [str(src / "big.bin")])
    with_copies(cfg, tmp_path)
    snap = vk(cfg, "snapshot", "--json")
    assert snap.returncode == 0, snap.stderr
    sid = json.loads(snap.stdout)["id"]
    env = {k: v for k, v in os.environ.items() if k != "VKBACKUP_CONFIG"}
    argv = [sys.executable, "-m", "vkbackup", "--config", str(cfg), "copy", "--limit-upload", "128"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    usb = tmp_path / "usb"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if usb.exists() and any(p.is_file() for p in (usb / "data").rglob("*")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    manifest = usb / layout.manifest_key("box", sid)
    assert not manifest.exists()
    assert (usb / layout.lock_key("box")).exists()  # the killed run's lock stays behind
    assert vk(cfg, "--storage", "usb", "list", "--json").stdout.strip() == "[]"
    again = vk(cfg, "copy", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["snapshots"][0]["status"] == "copied"
    assert (
        manifest.read_bytes() == (tmp_path / "store" / layout.manifest_key("box", sid)).read_bytes()
    )
    assert vk(cfg, "--storage", "usb", "verify", "--all").returncode == 0
