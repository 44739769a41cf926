"""Bandwidth limits through the real pipeline (issue 17): a local snapshot
(LocalTransport: bash, tar, gzip -> age -> local storage) of ~8 MiB of
incompressible data in two sources taken in parallel, with
[transfer] limit_upload_kib = 4096, then verify reading it back with
limit_download_kib. Only lower bounds on time are asserted (a limiter can
make nothing faster); the two parallel sources share one limiter, so together
they cannot beat the limit."""

from __future__ import annotations

import os
import time
from pathlib import Path

from vkbackup import catalog
from vkbackup.actions.snapshot import run_snapshot
from vkbackup.actions.verify import run_verify
from vkbackup.config import parse_config
from vkbackup.config.model import HostConfig
from vkbackup.crypto import generate_identity
from vkbackup.storage.local import LocalStorage
from vkbackup.storage.throttled import ThrottledStorage, throttle
from vkbackup.transport.local import LocalTransport

MIB = 1024 * 1024


def local(_: HostConfig) -> LocalTransport:
    return LocalTransport("local")


def test_limited_snapshot_and_verify_take_at_least_bytes_over_rate(tmp_path: Path) -> None:
    ident = generate_identity()
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(os.urandom(4 * MIB))  # random: gzip cannot shrink it
    b.write_bytes(os.urandom(4 * MIB))
    cfg = parse_config(
        {
            "storage": {"type": "local", "path": str(tmp_path / "store")},
            "encryption": {"recipients": [str(ident.recipient())]},
            "snapshot": {"parallel": 2, "compression": "gzip"},
            "transfer": {"limit_upload_kib": 4096, "limit_download_kib": 8192},
            "hosts": {
                "box": {
                    "address": "127.0.0.1",
                    "sources": [
                        {"type": "files", "name": "a", "paths": [str(a)]},
                        {"type": "files", "name": "b", "paths": [str(b)]},
                    ],
                }
            },
        },
        "test.toml",
    )
    base = LocalStorage(cfg.storage.path)
    storage = throttle(base, cfg.transfer)
    assert isinstance(storage, ThrottledStorage)

    t0 = time.monotonic()
    r = run_snapshot(cfg, "box", storage=storage, connect=local)
    elapsed = time.monotonic() - t0
    assert r.status == "complete", [s.error for s in r.sources]
    uploaded = r.bytes_new
    assert uploaded >= 8 * MIB
    # 8 MiB at 4 MiB/s, both sources through one limiter: ~2 s (lower bound only)
    assert elapsed >= 1.7, f"{uploaded} bytes in {elapsed:.2f}s: faster than 4 MiB/s"
    m = catalog.resolve(base, "latest", "box")
    assert {o.source for o in m.objects} == {"a", "b"}

    t0 = time.monotonic()
    results = run_verify(storage, [("box", r.id)], identities=[ident], record=False)
    elapsed = time.monotonic() - t0
    assert [x.ok for x in results] == [True], [x.bad for x in results]
    # 8 MiB read back at 8 MiB/s: ~1 s (lower bound only)
    assert elapsed >= 0.8, f"verify read {uploaded} bytes in {elapsed:.2f}s"
