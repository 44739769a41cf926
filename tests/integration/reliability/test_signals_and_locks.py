"""The CLI under SIGINT/SIGTERM, two runs at once, and a crashed run, against this
machine's sshd (no lab): `python -m vkbackup snapshot` in a subprocess, its config
pointing at the local sshd and a local storage directory."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.integration.reliability.conftest import (
    Box,
    files_under,
    make_box,
    run_cli,
    start_cli,
    wait_for,
)
from tests.integration.transport.conftest import Sshd
from vkbackup import catalog, layout
from vkbackup.storage.local import TEMP_MARK, LocalStorage


@pytest.fixture
def big_box(tmp_path: Path) -> Box:
    return make_box(tmp_path, big_mib=128)


def config(box: Box, sshd: Sshd) -> Path:
    return box.write_config(box.host(sshd.port, sshd.known_hosts, sshd.client_key))


def streaming(box: Box) -> bool:
    """True once a data object is being written (a temp file exists under data/; the
    lock is written through a temp file too, before it exists: that one is no stream)."""
    return any(TEMP_MARK in p and p.startswith("data/") for p in files_under(box.store))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_snapshot(sshd: Sshd, big_box: Box, sig: signal.Signals) -> None:
    box = big_box
    cfg = config(box, sshd)
    proc = start_cli(cfg, "snapshot", "box")
    wait_for(lambda: streaming(box) or proc.poll() is not None, 60, "the stream to start")
    assert proc.poll() is None, proc.communicate()
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    stopped_after = time.monotonic() - t0
    assert proc.returncode == 130, err
    assert "vkbackup: interrupted" in err and "Traceback" not in err
    storage = LocalStorage(box.store)
    assert catalog.list_snapshots(storage, "box") == []
    assert [i.key for i in storage.list("")] == []  # no object, no manifest, no lock
    assert storage.list_incomplete_uploads() == []
    print(f"{sig.name}: exited {stopped_after:.1f}s after the signal")
    # the next run succeeds
    ok = run_cli(cfg, "snapshot", "box", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "complete"


def test_second_snapshot_refused_naming_the_holder(sshd: Sshd, big_box: Box) -> None:
    box = big_box
    cfg = config(box, sshd)
    first = start_cli(cfg, "snapshot", "box")
    lock = box.store / layout.lock_key("box")
    wait_for(lambda: lock.exists() or first.poll() is not None, 60, "the first run's lock")
    second = run_cli(cfg, "snapshot", "box")
    assert first.poll() is None, "the first run ended before the second one started"
    assert second.returncode == 11, second.stderr  # ExitCode.LOCK_HELD
    assert "host box: another snapshot is running: held by" in second.stderr
    assert f"(pid {first.pid})" in second.stderr and "@" in second.stderr  # owner user@machine
    assert "Traceback" not in second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert len(catalog.list_snapshots(LocalStorage(box.store), "box")) == 1


def test_stale_lock_after_a_crash_is_reported_with_its_age(sshd: Sshd, big_box: Box) -> None:
    box = big_box
    cfg = config(box, sshd)
    crashed = start_cli(cfg, "snapshot", "box")
    wait_for(lambda: streaming(box) or crashed.poll() is not None, 60, "the stream to start")
    assert crashed.poll() is None
    crashed.send_signal(signal.SIGKILL)  # no cleanup at all
    crashed.communicate(timeout=30)
    storage = LocalStorage(box.store)
    held = json.loads((box.store / layout.lock_key("box")).read_text())
    assert held["pid"] == crashed.pid
    refused = run_cli(cfg, "snapshot", "box")
    assert refused.returncode == 1  # stale: not 11, waiting will not clear it
    msg = refused.stderr
    assert "a stale lock remains" in msg and f"(pid {crashed.pid})" in msg
    assert f"since {held['time']} (0h00m ago)" in msg
    assert "--break-lock" in msg
    # the crash left its temp file: listed as an incomplete upload (prune removes it),
    # never as a snapshot
    assert catalog.list_snapshots(storage, "box") == []
    assert len(storage.list_incomplete_uploads()) >= 1
    taken = run_cli(cfg, "snapshot", "box", "--break-lock", "--json")
    assert taken.returncode == 0, taken.stderr
    assert [s for _, s in catalog.list_snapshots(storage, "box")] == [
        json.loads(taken.stdout)["id"]
    ]
    assert storage.head(layout.lock_key("box")) is None
