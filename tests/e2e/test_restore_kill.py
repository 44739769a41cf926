"""Issue 16: a restore killed (SIGKILL) in the middle of its data resumes and ends
identical to prod, against the lab's real hosts.

One restore onto the bare fresh host is killed twice, each time at a point the test
makes certain of rather than guesses:

    1. while a volume and the database stream in side by side: watchers on fresh stop
       (SIGSTOP) the GNU tar that extracts chatwoot_storage_data once it has written
       VOLUME_STOP_AT bytes of a larger tree, and pg_restore once it has read half
       of the dump; the test waits until the steps that wait for neither (the
       images, the redis volume, the database's container start) are recorded done,
       checks the volume is partly written, and kills vkbackup;
    2. on the re-run, while pg_restore loads the dump: a watcher stops pg_restore once
       it has read half of the dump; the test checks the database on fresh is partly
       restored (its row counts are not prod's), and kills vkbackup.

After each kill the stopped process is continued and left to end by itself (its input
is cut or complete: either way its step was never recorded). A third run completes.
Asserted: every step recorded done before a kill is skipped ("already-done", and the
killed re-run never started it: its -v log), the killed steps run again, and fresh
equals prod: every table's content digest, schema, roles, sequences' values, both
volumes' tree signatures, the secret and config files, every container running and
every health URL answering.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.procwatch import Watcher
from tests.e2e.test_reliability import config_file
from tests.e2e.test_snapshot_restore import PLAYBOOK, assert_fresh_equals_prod
from tests.lab import database
from tests.lab.api import Lab

VOLUME = "chatwoot_storage_data"
BIG = "kill-restore.bin"  # added to prod's volume for the test (random, incompressible)
BIG_BYTES = 48 * 1024 * 1024
VOLUME_STOP_AT = 16 * 1024 * 1024  # bytes tar has written when it is stopped
STATE = "/var/lib/vkbackup/restore/{}.json"


def restore_argv(cfg: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "vkbackup", "--config", str(cfg), "-v", "restore", "latest",
        "--host", "prod", "--to", "fresh", "--playbook", PLAYBOOK, "--yes", *extra,
    ]  # fmt: skip


def done_steps(lab: Lab, snapshot_id: str) -> set[str]:
    """The step ids the resume state on fresh records as done."""
    out = lab.ssh("fresh", f"cat {STATE.format(snapshot_id)} 2>/dev/null || true").stdout
    return set(json.loads(out)["done"]) if out.strip() else set()


def wait_done(lab: Lab, snapshot_id: str, steps: set[str], timeout: float = 300) -> set[str]:
    deadline = time.monotonic() + timeout
    done = done_steps(lab, snapshot_id)
    while not steps <= done:
        assert time.monotonic() < deadline, f"never recorded done: {sorted(steps - done)}"
        time.sleep(0.3)
        done = done_steps(lab, snapshot_id)
    return done


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    assert proc.returncode == -signal.SIGKILL


def resume_ended(lab: Lab, pid: int, timeout: float = 120) -> None:
    """Continue the stopped *pid* on fresh and wait until it has ended by itself."""
    lab.ssh("fresh", f"kill -CONT {pid}", check=False)
    deadline = time.monotonic() + timeout
    while lab.ssh("fresh", f"kill -0 {pid} 2>/dev/null && echo alive || true").stdout.strip():
        assert time.monotonic() < deadline, f"process {pid} on fresh did not end"
        time.sleep(0.3)


def started_steps(log: str) -> list[str]:
    """Step ids a -v log says were started ("step ID: title")."""
    return [ln.split()[1].rstrip(":") for ln in log.splitlines() if ln.startswith("step ")]


@pytest.fixture
def big_file(lab: Lab) -> Iterator[None]:
    mp = f"$(docker volume inspect -f '{{{{.Mountpoint}}}}' {VOLUME})"
    lab.ssh("prod", f"head -c {BIG_BYTES} /dev/urandom > {mp}/{BIG}")
    try:
        yield
    finally:
        lab.ssh("prod", f"rm -f {mp}/{BIG}")


def test_restore_killed_in_a_volume_then_in_pg_restore_resumes_identical(
    fresh_lab: Lab, big_file: None, tmp_path: Path
) -> None:
    lab = fresh_lab
    cfg = config_file(lab, tmp_path / "store", tmp_path / "vkbackup.toml")
    snap = subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(cfg), "snapshot", "prod", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert snap.returncode == 0, snap.stderr
    doc = json.loads(snap.stdout)
    sid = doc["id"]
    dump_bytes = next(s["bytes_new"] for s in doc["sources"] if s["name"] == "chatwoot-db")
    stopped: list[int] = []
    watchers: list[Watcher] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # -- 1. killed while chatwoot_storage_data and the dump stream in, side by side ----
        # (the database's container mounts no backed-up volume: its dump goes in while
        # the attachments volume is still being filled)
        extracting = f"^tar -C /var/lib/docker/volumes/{VOLUME}/_data .*"
        tar = Watcher(lab, "fresh", "wchar", VOLUME_STOP_AT, "STOP", "-x", "-f", extracting)
        # its window covers installing Docker and loading the images first
        pg1 = Watcher(lab, "fresh", "rchar", dump_bytes // 2, "STOP", "-x", "pg_restore",
                      seconds=900)  # fmt: skip
        watchers += [tar, pg1]
        tar.ready()
        pg1.ready()
        log1 = tmp_path / "run1.log"
        with log1.open("wb") as err:
            proc = subprocess.Popen(restore_argv(cfg), stdout=subprocess.DEVNULL, stderr=err)
            procs.append(proc)
            pid, written = tar.result(lambda: proc.poll() is None)
            stopped.append(pid)
            pg_pid, read1 = pg1.result(lambda: proc.poll() is None)
            stopped.append(pg_pid)
            # the steps that wait for neither stopped process finish beside them
            wait_done(lab, sid, {"image:images", "volume:redis-data", "host-packages:host",
                                 "files:config", "start:chatwoot:postgres"})  # fmt: skip
            assert proc.poll() is None
            # partly written: fewer bytes in the volume than on prod, fewer rows
            du = f"du -sb /var/lib/docker/volumes/{VOLUME}/_data | cut -f1"
            have, full = (int(lab.ssh(h, du).stdout) for h in ("fresh", "prod"))
            assert written >= VOLUME_STOP_AT and have < full, (written, have, full)
            assert read1 < dump_bytes
            print(f"run 1 killed: tar stopped at {written} bytes, volume {have} of {full}; "
                  f"pg_restore read {read1} of {dump_bytes}")  # fmt: skip
            kill(proc)
        done1 = done_steps(lab, sid)
        assert "volume:chatwoot-storage" not in done1
        assert {"host-packages:host", "files:config", "image:images",
                "start:chatwoot:postgres"} <= done1, done1  # fmt: skip
        assert "database:chatwoot-db" not in done1
        for ended in (pid, pg_pid):
            resume_ended(lab, ended)
            stopped.remove(ended)

        # -- 2. the re-run resumes, and is killed while pg_restore loads the dump ----------
        pgr = Watcher(lab, "fresh", "rchar", dump_bytes // 2, "STOP", "-x", "pg_restore")
        watchers.append(pgr)
        pgr.ready()
        log2 = tmp_path / "run2.log"
        with log2.open("wb") as err:
            proc = subprocess.Popen(restore_argv(cfg), stdout=subprocess.DEVNULL, stderr=err)
            procs.append(proc)
            pid, read = pgr.result(lambda: proc.poll() is None)
            stopped.append(pid)
            # the volume, which runs beside the database now, finishes while it is stopped
            wait_done(lab, sid, {"volume:chatwoot-storage"})
            assert read < dump_bytes
            partial = lab.psql("fresh", "SET lock_timeout = '10s';\n" + database.COUNT_SQL)
            counts = {k: int(v) for k, v in (ln.rsplit("|", 1) for ln in partial.splitlines())}
            assert counts != lab.row_counts, "the database was already whole at the kill"
            assert sum(counts.values()) < sum(lab.row_counts.values())
            print(f"run 2 killed: pg_restore read {read} of {dump_bytes} bytes, "
                  f"{sum(counts.values())} of {sum(lab.row_counts.values())} rows in")  # fmt: skip
            kill(proc)
        ran2 = started_steps(log2.read_text())
        assert "volume:chatwoot-storage" in ran2 and "database:chatwoot-db" in ran2, ran2
        assert not set(ran2) & done1 - {"preflight"}, f"re-ran finished steps: {set(ran2) & done1}"
        done2 = done_steps(lab, sid)
        assert done1 | {"volume:chatwoot-storage"} <= done2, done2
        assert "database:chatwoot-db" not in done2
        resume_ended(lab, pid)
        stopped.remove(pid)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for w in watchers:
            w.stop()
        for pid in stopped:  # never leave a stopped process behind
            lab.ssh("fresh", f"kill -CONT {pid}", check=False)

    # -- 3. the third run completes ------------------------------------------------------
    cp = subprocess.run(
        [*restore_argv(cfg, "--json")], capture_output=True, text=True, timeout=1200
    )
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    report: dict[str, Any] = json.loads(cp.stdout)
    assert report["status"] == "ok"
    status = {s["id"]: s["status"] for s in report["steps"]}
    for step in done2:
        assert status[step] == "already-done", (step, status[step])
    assert status["database:chatwoot-db"] == "done"
    assert [s for s, v in status.items() if v not in ("done", "already-done")] == []

    # -- fresh equals prod -----------------------------------------------------------------
    got = assert_fresh_equals_prod(lab)
    assert f"./{BIG}".encode() in got["volumes"][VOLUME]["entries"]
    assert lab.table_row_counts("fresh") == lab.row_counts
