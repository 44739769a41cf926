"""Incremental volume chains through the real pipeline on this machine's Docker Engine:
LocalTransport -> GNU tar --listed-incremental on the volume -> age -> local storage;
then full + every incremental extracted into another volume must equal the source,
deletions included. (The lab's end-to-end tests do the same over SSH.)"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.realparts import require
from vkbackup import catalog
from vkbackup.actions.snapshot import run_snapshot
from vkbackup.config import parse_config
from vkbackup.config.model import Config, HostConfig
from vkbackup.crypto import generate_identity
from vkbackup.restore.objects import TarCheck, open_object
from vkbackup.restore.targuard import GuardState
from vkbackup.sources.docker_volume import restore_script
from vkbackup.storage.local import LocalStorage
from vkbackup.transport import pipeline_argv
from vkbackup.transport.local import LocalTransport


def docker_ok() -> bool:
    return shutil.which("docker") is not None and (
        subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    )


@pytest.fixture
def volumes() -> Iterator[tuple[str, str]]:
    if not docker_ok():
        require("no running Docker Engine")
    tag = uuid.uuid4().hex[:8]
    src, dst = f"vkbackup-test-src-{tag}", f"vkbackup-test-dst-{tag}"
    subprocess.run(["docker", "volume", "create", src], check=True, capture_output=True)
    yield src, dst
    subprocess.run(["docker", "volume", "rm", "-f", src, dst], capture_output=True)
    shutil.rmtree(f"/var/lib/vkbackup/snar/{src}", ignore_errors=True)


def mountpoint(volume: str) -> Path:
    out = subprocess.run(
        ["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", volume],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(out.stdout.strip())


def signature(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            entry: dict[str, Any] = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid}
            if p.is_symlink():
                entry["link"] = os.readlink(p)
            elif p.is_file():
                entry["sha"] = hashlib.sha256(p.read_bytes()).hexdigest()
                entry["mtime"] = int(st.st_mtime)
            out[rel] = entry
    return out


def cfg_for(tmp: Path, recipient: str, volume: str, max_chain: int = 6) -> Config:
    return parse_config(
        {
            "storage": {"path": str(tmp / "store")},
            "encryption": {"recipients": [recipient]},
            "snapshot": {"max_chain": max_chain, "full_every_days": 7},
            "hosts": {
                "box": {
                    "address": "127.0.0.1",
                    "sources": [
                        {"type": "docker-volume", "name": "data", "volume": volume, "stop": []}
                    ],
                }
            },
        },
        "test.toml",
    )


def local(_: HostConfig) -> LocalTransport:
    return LocalTransport("local")


def restore_latest(storage: LocalStorage, ident: Any, dst: str) -> list[int]:
    m = catalog.resolve(storage, "latest", "box")
    chain = sorted((o for o in m.objects if o.source == "data"), key=lambda o: o.chain)
    t = LocalTransport()
    state = GuardState()  # as restore does: tar headers checked across the whole chain
    for o in chain:
        script = restore_script(dst, "{}", o.compression, wipe=o.chain == 0)
        with open_object(storage, o, [ident], tar=TarCheck.volume(state)) as src:
            t.feed(pipeline_argv(script), src)
    return [o.chain for o in chain]


def test_chain_full_then_incrementals_restores_identically(tmp_path: Path, volumes: Any) -> None:
    src, dst = volumes
    root = mountpoint(src)
    for i in range(40):
        d = root / f"dir{i % 5}"
        d.mkdir(exist_ok=True)
        (d / f"file {i}.bin").write_bytes(os.urandom(20_000))
    os.symlink("dir0/file 0.bin", root / "link")
    ident = generate_identity()
    cfg = cfg_for(tmp_path, str(ident.recipient()), src)
    storage = LocalStorage(cfg.storage.path)

    first = run_snapshot(cfg, "box", storage=storage, connect=local)
    assert first.status == "complete" and first.bytes_new > 0
    # unchanged: nothing uploaded, the chain is referenced
    second = run_snapshot(cfg, "box", storage=storage, connect=local)
    assert second.bytes_new == 0 and second.bytes_reused == first.bytes_new
    # six rounds of changes: change 10 files, add some, delete some
    sizes = []
    for round_ in range(6):
        for i in range(10):
            d = root / f"dir{i % 4}"  # dir4 is deleted in round 3
            (d / f"file {i + round_}.bin").write_bytes(os.urandom(2_000))
        (root / f"new-{round_}.txt").write_text(f"round {round_}\n")
        if round_ >= 1:
            (root / f"new-{round_ - 1}.txt").unlink()
        if round_ == 3:
            shutil.rmtree(root / "dir4")
        r = run_snapshot(cfg, "box", storage=storage, connect=local)
        assert r.status == "complete"
        sizes.append(r.bytes_new)
    # incrementals are about the changed files only (10 x 2 KB, not 800 KB)
    assert max(sizes) < first.bytes_new / 10, (sizes, first.bytes_new)
    levels = restore_latest(storage, ident, dst)
    assert levels == [0, 1, 2, 3, 4, 5, 6]
    assert signature(mountpoint(dst)) == signature(root)
    # the chain is at max_chain: the next change starts a new full
    (root / "after.txt").write_text("x")
    r = run_snapshot(cfg, "box", storage=storage, connect=local)
    m = catalog.resolve(storage, "latest", "box")
    assert [o.chain for o in m.objects] == [0] and r.bytes_new > first.bytes_new / 2
    assert restore_latest(storage, ident, dst) == [0]
    assert signature(mountpoint(dst)) == signature(root)


def test_missing_snar_on_host_forces_a_full(tmp_path: Path, volumes: Any) -> None:
    src, _ = volumes
    root = mountpoint(src)
    (root / "a").write_bytes(b"a" * 10000)
    ident = generate_identity()
    cfg = cfg_for(tmp_path, str(ident.recipient()), src)
    storage = LocalStorage(cfg.storage.path)
    run_snapshot(cfg, "box", storage=storage, connect=local)
    shutil.rmtree(f"/var/lib/vkbackup/snar/{src}")
    (root / "b").write_bytes(b"b")
    run_snapshot(cfg, "box", storage=storage, connect=local)
    m = catalog.resolve(storage, "latest", "box")
    assert [o.chain for o in m.objects] == [0]
