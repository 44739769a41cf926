"""docker-volume `quiesce` (issue 18) against this machine's Docker Engine, with a
container that ignores SIGTERM (PID 1 without a handler) and writes a line to its
volume on every start, as the issue's app does.

- "pause": it is frozen for the copy, never signalled or restarted; its downtime is
  at most the copy plus 2 s; the next, unchanged snapshot references the chain and
  holds nothing; the restore of the volume is identical.
- "stop" with stop_timeout = 2: down for the timeout (SIGKILL after it) plus the
  copy; its restart rewrites the volume, so the next snapshot copies it again.
- "stop" without stop_timeout: no `-t`, the container's own stop timeout (1 s here).
- "none": nothing is held.
- a container somebody else unpaused during the copy counts as released: the guard
  is ended and a pause made afterwards stays.
- a container somebody else paused stays paused; a SIGKILLed script's containers
  are unpaused by the guard.
The image is made here from this machine's bash and sleep (no registry needed).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sources.test_volume_chain import (
    docker_ok,
    local,
    mountpoint,
    restore_latest,
    signature,
)
from tests.realparts import require
from vkbackup.actions.snapshot import SnapshotResult, run_snapshot
from vkbackup.config import parse_config
from vkbackup.config.model import Config
from vkbackup.crypto import generate_identity
from vkbackup.crypto.recipients import X25519Identity
from vkbackup.sources.docker_volume import quiesce_script
from vkbackup.storage.local import LocalStorage
from vkbackup.transport import pipeline_argv

# PID 1 with no SIGTERM handler: `docker stop` waits the whole timeout, then kills
APP = 'echo "start $EPOCHREALTIME" >>/data/starts; exec /bin/sleep infinity'


def docker(*args: str, check: bool = True) -> str:
    cp = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and cp.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {cp.stderr}")
    return cp.stdout.strip()


def _files_of(binaries: list[str]) -> dict[str, str]:
    """Path in the image -> file on this machine, for *binaries* and their libraries."""
    out: dict[str, str] = {}
    for b in binaries:
        out[b] = os.path.realpath(b)
        ldd = subprocess.run(["ldd", b], capture_output=True, text=True, check=True).stdout
        for lib in re.findall(r"(/\S+) \(0x", ldd):
            out[lib] = os.path.realpath(lib)
    return out


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    if not docker_ok():
        require("no running Docker Engine")
    files = _files_of(["/bin/bash", "/bin/sleep"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for arc, real in sorted(files.items()):
            tar.add(real, arcname=arc.lstrip("/"), recursive=False)
        d = tarfile.TarInfo("data")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
    tag = "vkbackup-test-quiesce:" + hashlib.sha256(buf.getvalue()).hexdigest()[:12]
    subprocess.run(["docker", "import", "-", tag], input=buf.getvalue(), check=True,
                   capture_output=True)  # fmt: skip
    yield tag
    docker("rmi", "-f", tag, check=False)


def _app(image: str, *run_args: str) -> Iterator[tuple[str, str]]:
    """(container, volume): the app running on a volume with 8 MB of data."""
    tag = uuid.uuid4().hex[:8]
    name, volume = f"vkbackup-test-app-{tag}", f"vkbackup-test-vol-{tag}"
    docker("volume", "create", volume)
    root = mountpoint(volume)
    for i in range(8):
        (root / f"blob-{i}.bin").write_bytes(os.urandom(1 << 20))
    os.symlink("blob-0.bin", root / "link")
    docker("run", "-d", "--name", name, "--network", "none", "-v", f"{volume}:/data",
           *run_args, image, "/bin/bash", "-c", APP)  # fmt: skip
    wait_status(name, "running")
    yield name, volume
    docker("rm", "-f", name, check=False)
    docker("volume", "rm", "-f", volume, f"{volume}-restored", check=False)
    shutil.rmtree(f"/var/lib/vkbackup/snar/{volume}", ignore_errors=True)


@pytest.fixture
def app(image: str) -> Iterator[tuple[str, str]]:
    yield from _app(image)


@pytest.fixture
def quick_app(image: str) -> Iterator[tuple[str, str]]:
    """The app, created with its own stop timeout of 1 s (compose: stop_grace_period)."""
    yield from _app(image, "--stop-timeout", "1")


def status(name: str) -> str:
    return docker("inspect", "-f", "{{.State.Status}}", name)


def started_at(name: str) -> str:
    return docker("inspect", "-f", "{{.State.StartedAt}}", name)


def wait_status(name: str, want: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status(name) == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} is {status(name)}, not {want}, after {timeout}s")


def events(name: str, since: str) -> list[str]:
    """The container's Docker events since *since* (pause, unpause, kill, die, start...)."""
    until = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    out = docker("events", "--since", since, "--until", until, "--filter",
                 f"container={name}", "--format", "{{.Action}}")  # fmt: skip
    return [e for e in out.split() if not e.startswith(("exec_", "top"))]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def config(tmp: Path, recipient: str, volume: str, **source: Any) -> Config:
    return parse_config(
        {
            "storage": {"path": str(tmp / "store")},
            "encryption": {"recipients": [recipient]},
            "hosts": {
                "box": {
                    "address": "127.0.0.1",
                    "sources": [
                        {"type": "docker-volume", "name": "data", "volume": volume, **source}
                    ],
                }
            },
        },
        "test.toml",
    )


def snapshot(cfg: Config) -> tuple[SnapshotResult, dict[str, Any]]:
    r = run_snapshot(cfg, "box", storage=LocalStorage(cfg.storage.path), connect=local)
    assert r.status == "complete", r.to_json()
    return r, r.to_json()["sources"][0]


def assert_restores(cfg: Config, ident: X25519Identity, volume: str) -> None:
    restore_latest(LocalStorage(cfg.storage.path), ident, f"{volume}-restored")
    assert signature(mountpoint(f"{volume}-restored")) == signature(mountpoint(volume))


def test_pause_freezes_without_restart_and_an_unchanged_volume_is_not_held_again(
    tmp_path: Path, app: tuple[str, str]
) -> None:
    name, volume = app
    ident = generate_identity()
    cfg = config(tmp_path, str(ident.recipient()), volume)  # quiesce: the default
    assert cfg.hosts["box"].sources[0].quiesce == "pause"
    born, t0 = started_at(name), now()
    r, doc = snapshot(cfg)
    assert doc["bytes_new"] > 8_000_000
    down = doc["downtime"]
    assert set(down) == {name}, doc
    assert 0 < down[name] <= r.sources[0].seconds + 2, doc
    assert doc["downtime_seconds"] >= down[name]
    # frozen and thawed: never signalled, never restarted
    assert status(name) == "running" and started_at(name) == born
    assert events(name, t0) == ["pause", "unpause"]
    assert (mountpoint(volume) / "starts").read_text().count("start") == 1
    assert_restores(cfg, ident, volume)
    # the next night: nothing changed it, so it is referenced and never paused
    t1 = now()
    _, doc2 = snapshot(cfg)
    assert doc2["bytes_new"] == 0 and doc2["bytes_reused"] == doc["bytes_new"], doc2
    assert doc2["downtime_seconds"] is None and doc2["downtime"] == {}
    assert events(name, t1) == []


def test_stop_waits_stop_timeout_for_an_app_ignoring_sigterm_and_restarts_it(
    tmp_path: Path, app: tuple[str, str]
) -> None:
    name, volume = app
    ident = generate_identity()
    cfg = config(tmp_path, str(ident.recipient()), volume, quiesce="stop", stop_timeout=2)
    born, t0 = started_at(name), now()
    r, doc = snapshot(cfg)
    down = doc["downtime"][name]
    assert 2 <= down <= 2 + r.sources[0].seconds + 2, doc
    assert status(name) == "running" and started_at(name) != born
    acts = events(name, t0)
    assert acts.count("kill") == 2 and "die" in acts and acts[-1] == "start", acts
    # its start wrote to the volume: the next snapshot copies it again, with downtime
    assert (mountpoint(volume) / "starts").read_text().count("start") == 2
    _, doc2 = snapshot(cfg)
    assert doc2["bytes_new"] > 0 and doc2["downtime"].get(name, 0) >= 2, doc2
    # the restore is the tree as copied: all but the line the restart wrote since
    dst = f"{volume}-restored"
    restore_latest(LocalStorage(cfg.storage.path), ident, dst)
    live, restored = signature(mountpoint(volume)), signature(mountpoint(dst))
    assert {k: v for k, v in live.items() if k != "starts"} == {
        k: v for k, v in restored.items() if k != "starts"
    }
    copied = (mountpoint(dst) / "starts").read_text()
    assert copied.count("start") == 2
    assert (mountpoint(volume) / "starts").read_text().startswith(copied)


def test_none_holds_nothing(tmp_path: Path, app: tuple[str, str]) -> None:
    name, volume = app
    ident = generate_identity()
    cfg = config(tmp_path, str(ident.recipient()), volume, quiesce="none")
    t0 = now()
    _, doc = snapshot(cfg)
    assert doc["bytes_new"] > 8_000_000
    assert doc["downtime_seconds"] is None and doc["downtime"] == {}
    assert events(name, t0) == [] and status(name) == "running"
    assert_restores(cfg, ident, volume)


def test_a_container_paused_by_someone_else_stays_paused(
    tmp_path: Path, app: tuple[str, str]
) -> None:
    name, volume = app
    ident = generate_identity()
    docker("pause", name)
    try:
        for mode in ("pause", "stop"):
            cfg = config(tmp_path / mode, str(ident.recipient()), volume, quiesce=mode)
            _, doc = snapshot(cfg)
            assert doc["downtime"] == {} and doc["downtime_seconds"] is None, (mode, doc)
            assert status(name) == "paused", mode
    finally:
        docker("unpause", name)


def test_a_killed_script_is_undone_by_the_guard(app: tuple[str, str]) -> None:
    name, _ = app
    pid_file = Path(f"/tmp/{name}.sleep")
    script = quiesce_script([name], f"sleep 60 & echo $! >{pid_file}; wait $!\n", "pause")
    proc = subprocess.Popen(pipeline_argv(script), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_status(name, "paused")
        proc.kill()
        proc.wait(timeout=10)
        wait_status(name, "running", timeout=5)  # the guard polls every second
    finally:
        if pid_file.exists():
            subprocess.run(["kill", pid_file.read_text().strip()], capture_output=True)
            pid_file.unlink()


def test_stop_without_stop_timeout_uses_the_containers_own(
    tmp_path: Path, quick_app: tuple[str, str]
) -> None:
    """No `-t`: Docker waits the container's own 1 s, not 10 s, before SIGKILL."""
    name, volume = quick_app
    ident = generate_identity()
    cfg = config(tmp_path, str(ident.recipient()), volume, quiesce="stop")
    assert cfg.hosts["box"].sources[0].stop_timeout is None
    born = started_at(name)
    _, doc = snapshot(cfg)
    down = doc["downtime"][name]
    assert 1 <= down < 9, doc  # 10 s and more if `docker stop -t 10` had been run
    assert status(name) == "running" and started_at(name) != born


def test_a_container_somebody_else_released_meanwhile_is_left_alone(
    app: tuple[str, str],
) -> None:
    """Our unpause fails ("not paused"); Docker says it runs, so that counts as done:
    the script ends 0, the guard is ended, and a pause made afterwards stays."""
    name, _ = app
    script = quiesce_script([name], f"docker unpause {name} >/dev/null\n", "pause")
    cp = subprocess.run(pipeline_argv(script), capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert "VKBACKUP-DOWNTIME-CONTAINER-MS" not in cp.stderr
    assert status(name) == "running"
    docker("pause", name)  # another run, right after
    try:
        time.sleep(2.5)  # longer than the guard's poll
        assert status(name) == "paused"
    finally:
        docker("unpause", name)
