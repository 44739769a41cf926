"""Faults on the SSH side of a snapshot, with this machine's sshd (no lab): the
connection cut mid-stream by a TCP proxy, and the remote process killed while it
streams. Each time: a clear error naming the host, status failed, nothing listed,
nothing left in storage, the lock released, and the next run succeeds."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
from pathlib import Path
from typing import Any

from tests.integration.reliability.conftest import MIB, Box, files_under, known_hosts_for
from tests.integration.tcpproxy import TcpProxy
from tests.integration.transport.conftest import Sshd
from tests.unpack import stock_open
from vkbackup import catalog, layout
from vkbackup.actions.snapshot import SnapshotResult, run_snapshot
from vkbackup.config.model import HostConfig
from vkbackup.storage.local import LocalStorage
from vkbackup.transport.ssh import SshTransport, connect


def only_app(host: dict[str, Any]) -> dict[str, Any]:
    host["sources"] = [s for s in host["sources"] if s["name"] == "app"]
    return host


def assert_nothing_left(storage: LocalStorage) -> None:
    assert catalog.list_snapshots(storage, "box") == []
    assert [i.key for i in storage.list("")] == []  # no object, no manifest, no lock
    assert storage.list_incomplete_uploads() == []
    assert files_under(storage.root) == []


def big_file_of(storage: LocalStorage, result: SnapshotResult, box: Box) -> bytes:
    m = catalog.load_manifest(storage, "box", result.id)
    obj = next(o for o in m.objects if o.source == "app")
    # stock age and zstd/gzip with the box's identity file, not vkbackup's decoder
    with tarfile.open(fileobj=io.BytesIO(stock_open(storage, obj, box.identity_path))) as tf:
        f = tf.extractfile(str(box.big).lstrip("/"))
        assert f is not None
        return f.read()


def test_ssh_connection_cut_mid_stream(sshd: Sshd, box: Box, tmp_path: Path) -> None:
    with TcpProxy(sshd.port) as proxy:
        kh = known_hosts_for(sshd, proxy.port, tmp_path / "known_hosts")
        cfg = box.config(only_app(box.host(proxy.port, kh, sshd.client_key)))
        storage = LocalStorage(box.store)
        # the facts and the plan are a few KiB: the cut lands inside the 64 MiB stream
        proxy.cut_after(down=24 * MIB)
        r = run_snapshot(cfg, "box", storage=storage, connect=connect)
        assert proxy.cuts == 1
        assert r.status == "failed" and r.manifest_key is None
        err = r.sources[0].error or ""
        assert f"root@127.0.0.1:{proxy.port}" in err, err
        assert "the connection dropped" in err or "connection lost" in err, err
        assert_nothing_left(storage)
        # the next run, through the same proxy, succeeds
        again = run_snapshot(cfg, "box", storage=storage, connect=connect)
        assert again.status == "complete", again.to_json()
    assert big_file_of(storage, again, box) == box.big.read_bytes()
    assert storage.head(layout.lock_key("box")) is None


def test_remote_process_killed_mid_stream(sshd: Sshd, box: Box) -> None:
    """The remote tar dies (SIGKILL) while streaming: the pipeline's status names it."""
    cfg = box.config(only_app(box.host(sshd.port, sshd.known_hosts, sshd.client_key)))
    storage = LocalStorage(box.store)
    killed: list[int] = []
    started = threading.Event()

    class KillingTransport:
        """Wraps the SSH transport; once the stream is flowing, kills its remote tar."""

        def __init__(self, inner: SshTransport) -> None:
            self._inner = inner
            self.name = inner.name

        def __getattr__(self, attr: str) -> object:
            return getattr(self._inner, attr)

        def start(self, argv: list[str]) -> object:
            proc = self._inner.start(argv)
            if "tar -C / -cf -" in argv[-1]:
                started.set()
            return proc

    def connector(h: HostConfig) -> KillingTransport:
        return KillingTransport(connect(h))

    def killer() -> None:
        if not started.wait(60):
            return
        marker = str(box.big).lstrip("/").encode()
        while not killed:
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if cmd and cmd[0].endswith(b"tar") and marker in cmd:
                    os.kill(int(pid), 9)  # the tar our own snapshot started, by pid
                    killed.append(int(pid))
                    return

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    r = run_snapshot(cfg, "box", storage=storage, connect=connector)  # type: ignore[arg-type]
    t.join(10)
    assert killed, "never found the remote tar to kill"
    assert r.status == "failed"
    err = r.sources[0].error or ""
    assert f"root@127.0.0.1:{sshd.port}" in err and "exited with status 137" in err, err
    assert_nothing_left(storage)
    again = run_snapshot(cfg, "box", storage=storage, connect=connect)
    assert again.status == "complete"
    assert (
        hashlib.sha256(big_file_of(storage, again, box)).digest()
        == hashlib.sha256(box.big.read_bytes()).digest()
    )
