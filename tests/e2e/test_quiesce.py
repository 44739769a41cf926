"""Issue 18, container downtime during a volume snapshot, against the lab: a
container that ignores SIGTERM (its PID 1 is `sleep`, which has no handler,
and PID 1 gets no default action) writes a line to its volume each time it
starts, as the issue's app did.

- quiesce = "stop" with stop_timeout = 3: `docker stop -t 3` waits the whole
  3 s before SIGKILL, so the container's recorded downtime is at least 3 s
  (a lower bound: load only makes it longer), it was restarted (a new start
  time), and its start wrote a line: the next night's tree is a new one.
- quiesce = "pause": the same container is frozen, never signalled or
  restarted (same start time, not left paused), and the volume is unchanged
  afterwards, so the second snapshot references the first one's objects and
  pauses nothing.
- Either way the restore of that volume onto the fresh host is the volume as
  it was copied: prod's tree for pause, the one start before the restart for
  stop.

How long a pause holds a container (the copy time plus milliseconds) is
measured in benchmarks/, not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.labconfig import drop_volume, own_config, volume_source
from tests.e2e.treesig import volume_signature
from tests.lab.api import Lab

VOLUME = "vk_quiesce"
CONTAINER = "vk-sigterm"
IMAGE = "debian-lab:bookworm"  # the lab's base image, present on prod
MP = f"$(docker volume inspect -f '{{{{.Mountpoint}}}}' {VOLUME})"


def vk(cfg: Path, *args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "vkbackup", "--config", str(cfg), *args, "--json"]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert cp.returncode == 0, cp.stderr
    doc: dict[str, Any] = json.loads(cp.stdout)
    return doc


def state(lab: Lab) -> tuple[str, bool, bool]:
    """The container's start time, and whether it runs and is paused."""
    fmt = "{{.State.StartedAt}} {{.State.Running}} {{.State.Paused}}"
    started, running, paused = lab.ssh(
        "prod", f"docker inspect -f '{fmt}' {CONTAINER}"
    ).stdout.split()
    return started, running == "true", paused == "true"


@pytest.fixture
def app(lab: Lab) -> Iterator[str]:
    """A container on its own volume that ignores SIGTERM and writes a line on start."""
    lab.ssh("prod", f"docker rm -f {CONTAINER} >/dev/null 2>&1; docker volume rm -f {VOLUME}")
    lab.ssh(
        "prod",
        f"docker run -d --name {CONTAINER} -v {VOLUME}:/data {IMAGE} "
        "sh -c 'date +%s%N >> /data/starts; exec sleep infinity' >/dev/null",
    )
    try:
        yield CONTAINER
    finally:
        lab.ssh("prod", f"docker rm -f {CONTAINER} >/dev/null")
        drop_volume(lab, VOLUME)


def config(lab: Lab, tmp_path: Path, quiesce: str) -> Path:
    keys: dict[str, Any] = {"stop": [CONTAINER], "quiesce": quiesce}
    if quiesce == "stop":
        keys["stop_timeout"] = 3
    src = volume_source("quiesce", VOLUME, **keys)
    return own_config(lab, tmp_path / f"{quiesce}.toml", tmp_path / quiesce, src)


def source(doc: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any]
    [s] = [s for s in doc["sources"] if s["name"] == "quiesce"]
    assert s["status"] == "ok", s
    return s


def starts(lab: Lab, host: str = "prod") -> int:
    return len(lab.ssh(host, f"cat {MP}/starts").stdout.split())


def restore_volume(lab: Lab, cfg: Path, snapshot: str) -> None:
    """The snapshot's quiesce source (a --only snapshot: partial, so by its id) onto
    the emptied fresh host."""
    lab.reset_fresh()
    doc = vk(cfg, "restore", snapshot, "--to", "fresh", "--only", "quiesce", "--yes")
    assert doc["status"] == "ok", doc.get("error")


def test_stop_waits_stop_timeout_for_a_container_that_ignores_sigterm(
    lab: Lab, app: str, tmp_path: Path
) -> None:
    cfg = config(lab, tmp_path, "stop")
    before = state(lab)
    snap = vk(cfg, "snapshot", "prod", "--only", "quiesce")
    s = source(snap)
    after = state(lab)
    assert after[1:] == (True, False) and after[0] != before[0]  # restarted, running
    # docker stop -t 3 waited for SIGKILL; down no longer than the source took, plus 2 s
    assert 3.0 <= s["downtime"][CONTAINER] <= s["seconds"] + 2
    assert starts(lab) == 2  # its start changed the volume: tomorrow copies it again
    # the copy is the volume as it was while the container was down: one start
    restore_volume(lab, cfg, snap["id"])
    assert starts(lab, "fresh") == 1


def test_pause_never_restarts_and_an_untouched_volume_is_not_paused_again(
    lab: Lab, app: str, tmp_path: Path
) -> None:
    cfg = config(lab, tmp_path, "pause")
    before = state(lab)
    first = source(vk(cfg, "snapshot", "prod", "--only", "quiesce"))
    assert state(lab) == before  # same start time, running, not left paused
    assert set(first["downtime"]) == {CONTAINER}
    # held no longer than the copy (the source's whole time) plus 2 s: the bound
    assert first["downtime"][CONTAINER] <= first["seconds"] + 2
    assert first["bytes_new"] > 0
    assert starts(lab) == 1  # no restart wrote to the volume

    snap = vk(cfg, "snapshot", "prod", "--only", "quiesce")
    second = source(snap)
    assert second["bytes_new"] == 0 and second["bytes_reused"] == first["bytes_new"]
    assert not second.get("downtime")  # unchanged: nothing was paused
    assert state(lab) == before
    # and the restored volume is prod's, entry for entry
    restore_volume(lab, cfg, snap["id"])  # its objects are the first snapshot's
    assert volume_signature(lab, "fresh", VOLUME) == volume_signature(lab, "prod", VOLUME)
