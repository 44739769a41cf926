"""The local storage's disk fills up during a snapshot (a 4 MiB tmpfs; we run as
root): the source that did not fit fails with the path and ENOSPC, nothing
partial is visible (no temp file, no object of the failed source), the lock is
released, and once there is room the next run succeeds."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.reliability.conftest import MIB, Box, files_under, make_box
from tests.realparts import require
from tests.unpack import local_tar_name
from vkbackup import catalog, layout
from vkbackup.actions.snapshot import run_snapshot
from vkbackup.config.model import HostConfig
from vkbackup.storage.local import LocalStorage
from vkbackup.transport.local import LocalTransport


def local(_: HostConfig) -> LocalTransport:
    return LocalTransport("local")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        require(f"cannot mount a tmpfs here, as root it must ({r.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def box(tmp_path: Path, tiny_fs: Path) -> Box:
    b = make_box(tmp_path / "box", big_mib=16)
    b.store = tiny_fs / "repo"
    return b


def test_disk_full_during_snapshot(box: Box) -> None:
    host = box.host(22, box.root / "kh", box.root / "key")
    cfg = box.config(host)
    storage = LocalStorage(box.store)
    r = run_snapshot(cfg, "box", storage=storage, connect=local)
    # the small source fits, the 16 MiB one does not: a partial snapshot that says so
    assert r.status == "partial"
    app = next(s for s in r.sources if s.name == "app")
    assert app.status == "failed"
    err = app.error or ""
    key = layout.object_key("box", r.id, "app", local_tar_name())
    assert str(box.store / key) in err and "No space left on device (errno 28)" in err, err
    m = catalog.load_manifest(storage, "box", r.id)
    assert m.status == "partial" and {o.source for o in m.objects} == {"secrets"}
    assert storage.list_incomplete_uploads() == []
    assert [p for p in files_under(box.store) if "/app/" in p] == []
    assert storage.head(layout.lock_key("box")) is None

    # only the big source: status failed, no manifest at all
    host["sources"] = [s for s in host["sources"] if s["name"] == "app"]
    r2 = run_snapshot(box.config(host), "box", storage=storage, connect=local)
    assert r2.status == "failed" and r2.manifest_key is None
    assert catalog.list_snapshots(storage, "box") == [("box", r.id)]
    assert storage.list_incomplete_uploads() == []
    assert storage.head(layout.lock_key("box")) is None

    # room again (the file shrank): the next run succeeds
    with open(box.big, "r+b") as f:
        f.truncate(MIB // 2)
    r3 = run_snapshot(box.config(host), "box", storage=storage, connect=local)
    assert r3.status == "complete", r3.to_json()
