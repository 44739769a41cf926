"""Issue 10 against the lab: faults, bad data and secrets where only the lab has the
real thing (Docker volumes with containers to stop, PostgreSQL, a fresh host).

    - the SSH connection to prod cut mid-stream (a TCP proxy in front of its sshd)
      during a docker-volume snapshot: the stopped containers run again, the next
      run succeeds;
    - pg_dump cannot run (no such database / no such container), or is killed after
      it has streamed 1 MiB: a clear error naming the database, nothing listed, no
      object left;
    - prod's disk full where the snapshot writes on it (the volume's .snar directory,
      a 4 KiB tmpfs mounted there): a clear error, containers running again;
    - SIGTERM during a restore: exit 130, and the next run resumes;
    - a corrupted object: restore refuses it, naming it, and starts no service;
    - a hostile volume tar (a device node): refused by the tar guard, naming the member;
    - after a snapshot and a restore through S3, fresh equals prod (the same checks
      as the restore from local storage), and neither the S3 keys, nor the age
      identity, nor the SSH key are anywhere on prod's or fresh's filesystems.

Every test uses its own storage directory (or a private copy of the lab's), never
the lab's own snapshots.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.procwatch import Watcher
from tests.e2e.test_snapshot_restore import assert_fresh_equals_prod
from tests.integration.tcpproxy import TcpProxy
from tests.lab.api import Lab
from tests.realparts import require
from vkbackup import catalog, layout, sshsig
from vkbackup.actions.snapshot import SnapshotResult, run_snapshot
from vkbackup.config import load_config
from vkbackup.config.model import Config, StorageConfig
from vkbackup.crypto import encrypt_bytes, load_identity_file, parse_recipient
from vkbackup.manifest import ObjectRecord, encode, open_private
from vkbackup.signing import read_private_key
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import BytesReader
from vkbackup.transport.ssh import connect

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = str(REPO / "restore-playbooks" / "visualkit.toml")
VOLUME = "chatwoot_storage_data"
VOLUME_SOURCE = "chatwoot-storage"
STOPPED = ("chatwoot-chatwoot-1", "chatwoot-chatwoot-sidekiq-1")


# -- helpers ------------------------------------------------------------------------------


def lab_cfg(
    lab: Lab,
    store: Path,
    *,
    sources: Sequence[str] | None = None,
    port: int | None = None,
    known_hosts: Path | None = None,
    edit: Callable[[Any], Any] | None = None,
) -> Config:
    """The lab config with its own local storage, some of prod's sources, and prod
    reached through another port (a proxy) if asked."""
    cfg = load_config(lab.config_path)
    prod = cfg.hosts["prod"]
    srcs = tuple(
        (edit(s) if edit else s) for s in prod.sources if sources is None or s.name in sources
    )
    host = dataclasses.replace(
        prod,
        port=port or prod.port,
        known_hosts=known_hosts or prod.known_hosts,
        sources=srcs,
    )
    return dataclasses.replace(
        cfg, storage=StorageConfig(type="local", path=store), hosts={**cfg.hosts, "prod": host}
    )


def config_file(lab: Lab, store: Path, path: Path) -> Path:
    """A copy of the lab's config file whose local storage is *store*."""
    text = lab.config_path.read_text()
    text = re.sub(r'(?m)^path = ".*"$', f'path = "{store}"', text, count=1)
    path.write_text(text)
    path.chmod(0o600)
    return path


def wait_running(lab: Lab, names: Sequence[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    running: list[str] = []
    while time.monotonic() < deadline:
        running = lab.running_containers("prod")
        if set(names) <= set(running):
            return
        time.sleep(1)
    pytest.fail(f"containers not running again after {timeout:.0f}s: "
                f"{sorted(set(names) - set(running))}")  # fmt: skip


def assert_nothing_left(storage: LocalStorage) -> None:
    assert catalog.list_snapshots(storage, "prod") == []
    assert [i.key for i in storage.list("")] == []  # no object, no manifest, no lock
    assert storage.list_incomplete_uploads() == []


def restore_argv(config: Path) -> list[str]:
    return [
        sys.executable, "-m", "vkbackup", "--config", str(config), "restore", "latest",
        "--host", "prod", "--to", "fresh", "--playbook", PLAYBOOK, "--yes",
    ]  # fmt: skip


def private_copy(lab: Lab, tmp: Path) -> tuple[Path, LocalStorage, str]:
    """A copy of the lab storage holding only the latest complete snapshot of prod
    (its manifest, the manifest's signature and every object it names), and a
    config file pointing at it."""
    src = LocalStorage(lab.storage_dir)
    m = catalog.resolve(src, "latest", "prod")
    dst = tmp / "store"
    manifest = layout.manifest_key("prod", m.id)
    for key in [manifest, layout.signature_key(manifest), *(o.key for o in m.objects)]:
        target = dst / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lab.storage_dir / key, target)
    return config_file(lab, dst, tmp / "vkbackup.toml"), LocalStorage(dst), m.id


@pytest.fixture(scope="module")
def snap(lab: Lab) -> dict[str, Any]:
    cp = lab.vkbackup("snapshot", "prod", "--json")
    assert cp.returncode == 0, cp.stderr
    doc: dict[str, Any] = json.loads(cp.stdout)
    assert doc["status"] == "complete"
    return doc


# -- faults -------------------------------------------------------------------------------


def test_ssh_cut_mid_volume_snapshot_restarts_containers(lab: Lab, tmp_path: Path) -> None:
    prod_port = lab.hosts["prod"].port
    with TcpProxy(prod_port) as proxy:
        kh = tmp_path / "known_hosts"
        kh.write_text(
            lab.known_hosts.read_text().replace(
                f"[127.0.0.1]:{prod_port} ", f"[127.0.0.1]:{proxy.port} "
            )
        )
        assert f"[127.0.0.1]:{proxy.port} " in kh.read_text()

        def take(store: Path) -> SnapshotResult:
            cfg = lab_cfg(lab, store, sources=[VOLUME_SOURCE], port=proxy.port, known_hosts=kh)
            return run_snapshot(cfg, "prod", storage=LocalStorage(store), connect=connect)

        # 1. through the proxy without a cut: how many bytes come down, how many of
        #    them are the volume's stream (an empty storage: always a full tar)
        first = take(tmp_path / "measure")
        assert first.status == "complete", first.to_json()
        total, stream = proxy.forwarded["down"], first.sources[0].bytes_new
        assert stream > 1024 * 1024 and total > stream
        # 2. the same, cut in the middle of the volume's stream
        proxy.cut_after(down=total - stream // 2)
        store = tmp_path / "cut"
        cut = take(store)
        assert proxy.cuts == 1
        assert cut.status == "failed" and cut.manifest_key is None
        err = cut.sources[0].error or ""
        assert f"root@127.0.0.1:{proxy.port}" in err, err
        assert "connection" in err, err
        assert_nothing_left(LocalStorage(store))
        # every container the snapshot stopped runs again (trap / guard on prod)
        wait_running(lab, list(lab.containers))
        # 3. the next run succeeds
        again = take(store)
        assert again.status == "complete", again.to_json()
    wait_running(lab, list(lab.containers))


def test_database_that_does_not_exist_is_a_clear_error(lab: Lab, tmp_path: Path) -> None:
    store = tmp_path / "store"
    cfg = lab_cfg(
        lab, store, sources=["chatwoot-db"],
        edit=lambda s: dataclasses.replace(s, database="no_such_db"),
    )  # fmt: skip
    r = run_snapshot(cfg, "prod", storage=LocalStorage(store), connect=connect)
    assert r.status == "failed" and r.manifest_key is None
    err = r.sources[0].error or ""
    assert f"127.0.0.1:{lab.hosts['prod'].port}" in err and "'no_such_db'" in err, err
    assert 'database "no_such_db" does not exist' in err, err
    assert_nothing_left(LocalStorage(store))


def test_database_container_that_does_not_exist_is_a_clear_error(lab: Lab, tmp_path: Path) -> None:
    store = tmp_path / "store"
    cfg = lab_cfg(
        lab, store, sources=["chatwoot-db"],
        edit=lambda s: dataclasses.replace(s, container="chatwoot-postgres-9"),
    )  # fmt: skip
    r = run_snapshot(cfg, "prod", storage=LocalStorage(store), connect=connect)
    assert r.status == "failed"
    err = r.sources[0].error or ""
    assert "'chatwoot-postgres-9'" in err and "No such container" in err, err
    assert_nothing_left(LocalStorage(store))


def test_pg_dump_killed_mid_stream_is_a_clear_error(lab: Lab, tmp_path: Path) -> None:
    """pg_dump dies (SIGKILL, by its pid in the container) after it has streamed at
    least 1 MiB of a dump of more than 8 MiB: the snapshot fails naming the database,
    and leaves nothing listed and no object behind.

    A watcher on prod (procwatch: the container's processes are prod's too) finds the
    streaming pg_dump (its --snapshot= argument; not the `pg_dump --version` the plan
    runs) and reads its /proc/PID/io `wchar`, the bytes it has written to the stream,
    with shell builtins only, killing it the moment that reaches 1 MiB. The 8 MiB of
    random bytes a table of its own adds keep the rest of the dump far from done."""
    pad = "public.vk_dump_pad"
    lab.psql(
        "prod",
        f"CREATE TABLE {pad} AS "
        "SELECT g AS id, gen_random_bytes(1024) AS b FROM generate_series(1, 8192) AS g;",
    )
    store = tmp_path / "store"
    config = config_file(lab, store, tmp_path / "vkbackup.toml")

    def vk(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vkbackup", "--config", str(config), *args],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    watcher = Watcher(
        lab, "prod", "wchar", 1024 * 1024, "KILL", "-x", "-f", "^pg_dump .*--snapshot=.*"
    )
    try:
        watcher.ready()
        cp = vk("snapshot", "prod", "--only", "chatwoot-db", "--json")
        _pid, streamed = watcher.result()
    finally:
        watcher.stop()
        lab.psql("prod", f"DROP TABLE IF EXISTS {pad};")
    assert 1024 * 1024 <= streamed < 8 * 1024 * 1024, streamed  # killed mid-stream
    assert cp.returncode == 1, cp.stdout + cp.stderr  # nothing saved: no snapshot
    doc = json.loads(cp.stdout)
    assert doc["status"] == "failed" and doc["manifest"] is None, doc
    (src,) = doc["sources"]
    err = src["error"] or ""
    assert src["name"] == "chatwoot-db" and src["status"] == "failed", src
    assert f"127.0.0.1:{lab.hosts['prod'].port}" in err, err
    assert (
        f"pg_dump of database {lab.database} in container chatwoot-postgres-1 failed "
        "(killed by signal 9): the dump is incomplete"
    ) in err, err
    # the row counts it had taken are not left on prod
    counts = f"/tmp/vkbackup-{doc['id']}-chatwoot-db.counts"
    assert lab.ssh("prod", f"test -e {counts} && echo left || echo gone").stdout.strip() == "gone"
    assert "Traceback" not in cp.stderr
    listed = vk("list", "prod", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert_nothing_left(LocalStorage(store))
    wait_running(lab, list(lab.containers))


def test_remote_disk_full_is_a_clear_error(lab: Lab, tmp_path: Path) -> None:
    """The one place a volume snapshot writes on prod is the volume's .snar directory:
    a 4 KiB tmpfs there makes GNU tar fail to write it (ENOSPC)."""
    snar_dir = f"/var/lib/vkbackup/snar/{VOLUME}"
    mounted = lab.ssh(
        "prod", f"mkdir -p {snar_dir} && mount -t tmpfs -o size=4k tmpfs {snar_dir}", check=False
    )
    if mounted.returncode != 0:
        require(f"cannot mount a tmpfs on prod: {mounted.stderr.strip()}")
    store = tmp_path / "store"
    cfg = lab_cfg(lab, store, sources=[VOLUME_SOURCE])
    try:
        r = run_snapshot(cfg, "prod", storage=LocalStorage(store), connect=connect)
        assert r.status == "failed", r.to_json()
        err = r.sources[0].error or ""
        assert f"127.0.0.1:{lab.hosts['prod'].port}" in err, err
        assert "No space left on device" in err, err
        assert_nothing_left(LocalStorage(store))
        wait_running(lab, list(lab.containers))
    finally:
        lab.ssh("prod", f"umount -l {snar_dir}", check=False)
    again = run_snapshot(cfg, "prod", storage=LocalStorage(store), connect=connect)
    assert again.status == "complete", again.to_json()


def test_sigterm_during_restore_then_the_next_run_resumes(
    fresh_lab: Lab, snap: dict[str, Any]
) -> None:
    lab = fresh_lab
    proc = subprocess.Popen(
        restore_argv(lab.config_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    state = f"/var/lib/vkbackup/restore/{snap['id']}.json"
    done: dict[str, Any] = {}
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        cp = lab.ssh("fresh", f"cat {state} 2>/dev/null || true", check=False)
        if cp.stdout.strip():
            done = json.loads(cp.stdout)["done"]
            if len(done) >= 3:
                break
        time.sleep(0.3)
    assert proc.poll() is None, "the restore finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "vkbackup: interrupted" in err and "Traceback" not in err
    again = lab.vkbackup(*restore_argv(lab.config_path)[5:], "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    statuses = {s["id"]: s["status"] for s in report["steps"]}
    for step_id in done:
        assert statuses[step_id] == "already-done", (step_id, statuses)
    assert "done" in statuses.values()
    assert lab.table_checksums("fresh") == lab.table_checksums("prod")


# -- bad data -----------------------------------------------------------------------------


def test_corrupted_object_refused_and_no_service_starts(
    fresh_lab: Lab, snap: dict[str, Any], tmp_path: Path
) -> None:
    lab = fresh_lab
    config, storage, sid = private_copy(lab, tmp_path)
    m = catalog.load_manifest(storage, "prod", sid)
    obj = max((o for o in m.objects if o.source == VOLUME_SOURCE), key=lambda o: o.chain)
    path = storage.root / obj.key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    cp = subprocess.run(restore_argv(config), capture_output=True, text=True, timeout=1800)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert obj.key in cp.stderr, cp.stderr
    assert "Traceback" not in cp.stderr
    running = lab.running_containers("fresh")
    assert not set(running) & set(lab.containers), f"services started on bad data: {running}"


def test_hostile_volume_tar_refused_by_the_guard(
    fresh_lab: Lab, snap: dict[str, Any], tmp_path: Path
) -> None:
    """A volume object that is a valid, authenticated tar holding a device node
    (/dev/mem's numbers): GNU tar would create it in the volume; the guard refuses
    it before its header reaches fresh, and no service starts."""
    lab = fresh_lab
    config, storage, sid = private_copy(lab, tmp_path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        d = tarfile.TarInfo("./")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        hello = tarfile.TarInfo("./hello.txt")
        hello.size = 6
        tf.addfile(hello, io.BytesIO(b"hello\n"))
        dev = tarfile.TarInfo("./dev-mem")
        dev.type = tarfile.CHRTYPE
        dev.devmajor, dev.devminor = 1, 1
        tf.addfile(dev)
    cipher = encrypt_bytes(gzip.compress(buf.getvalue()), [parse_recipient(lab.recipient)])
    key = layout.object_key("prod", sid, VOLUME_SOURCE, "volume-hostile.tar.gz.age")
    storage.put(key, BytesReader(cipher))
    m = catalog.load_manifest(storage, "prod", sid)
    open_private(m, load_identity_file(lab.identity))
    hostile = ObjectRecord(
        key=key, source=VOLUME_SOURCE, name="volume-hostile.tar.gz.age", role="tar",
        size=len(cipher), sha256=hashlib.sha256(cipher).hexdigest(), compression="gzip",
    )  # fmt: skip
    m.objects = [o for o in m.objects if o.source != VOLUME_SOURCE] + [hostile]
    # signed with the lab's own key: the signer is trusted here (a prod host that
    # made a hostile tar, say); the tar guard is the line this test proves
    body = encode(m, [parse_recipient(lab.recipient)])
    signature = sshsig.sign(read_private_key(lab.paths.signing_key), body)
    manifest = layout.manifest_key("prod", sid)
    storage.put(layout.signature_key(manifest), BytesReader(signature))
    storage.put(manifest, BytesReader(body))
    cp = subprocess.run(restore_argv(config), capture_output=True, text=True, timeout=1800)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert key in cp.stderr and "'./dev-mem'" in cp.stderr and "character device" in cp.stderr
    mp = f"$(docker volume inspect -f '{{{{.Mountpoint}}}}' {VOLUME})"
    probe = lab.ssh("fresh", f"test -e {mp}/dev-mem && echo PRESENT || echo absent", check=False)
    assert probe.stdout.strip() == "absent"
    assert not set(lab.running_containers("fresh")) & set(lab.containers)


# -- secrets ------------------------------------------------------------------------------


def _host_files(lab: Lab, host: str) -> bytes:
    """The text-bearing parts of a host's filesystem, as one tar (read here, so no
    secret is ever sent to the host to search for it)."""
    cp = lab.ssh_bytes(
        host,
        "cd / && tar -cf - --ignore-failed-read --warning=none "
        "$(ls -d tmp root home etc opt var/tmp var/log var/lib/vkbackup "
        "var/lib/docker/containers 2>/dev/null)",
        check=False,
        timeout=600,
    )
    assert len(cp.stdout) > 100_000, cp.stderr[-500:]
    return cp.stdout


def test_storage_credentials_and_identity_never_reach_the_hosts(fresh_lab: Lab) -> None:
    lab = fresh_lab
    snap_cp = lab.vkbackup("snapshot", "prod", "--json", s3=True)
    assert snap_cp.returncode == 0, snap_cp.stderr
    rest = lab.vkbackup(
        "restore", "latest", "--host", "prod", "--to", "fresh", "--playbook", PLAYBOOK,
        "--yes", "--json", s3=True,
    )  # fmt: skip
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert json.loads(rest.stdout)["status"] == "ok"
    # restored from S3, the same as from local storage: fresh is prod
    assert_fresh_equals_prod(lab)
    identity_lines = [
        line.strip()
        for line in lab.identity.read_text().splitlines()
        if line.startswith("AGE-SECRET-KEY-")
    ]
    # the first base64 line of every unencrypted OpenSSH ed25519 key is the same format
    # header (the host's own host keys share it): take a line of the private part
    ssh_key_body = lab.key_file.read_text().splitlines()[3]
    needles = {
        "S3 secret key": lab.s3.secret_key,
        "S3 access key": lab.s3.access_key,
        "SSH private key": ssh_key_body,
        **{f"age identity {i}": v for i, v in enumerate(identity_lines)},
    }
    assert identity_lines and all(len(v) >= 16 for v in needles.values())
    for host in ("prod", "fresh"):
        blob = _host_files(lab, host)
        found = [name for name, v in needles.items() if v.encode() in blob]
        assert found == [], f"{host} holds: {found}"
    # and the scan is able to find a secret where one is: the .env values are on prod
    env_values = [v.encode() for v in lab.secret_values if len(v) >= 12]
    assert any(v in _host_files(lab, "prod") for v in env_values)
