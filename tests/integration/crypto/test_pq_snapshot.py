"""A snapshot to post-quantum recipients through the real pipeline, opened by stock age 1.3.

The nightly run needs no other change than an age1pq1... key in
encryption.recipients: the same LocalTransport (bash, tar, gzip) -> age ->
local storage -> manifest path as tests/integration/actions, with every
object and the manifest's sealed private part written to the hybrid key.
The oracle is stock age 1.3.2 (the first Debian build that knows PQ keys;
.ci/setup unpacks it), never vkbackup's own decoder.
"""

from __future__ import annotations

import base64
import io
import logging
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.unit.crypto.age13 import age13_tool
from tests.unpack import unpack
from vkbackup import catalog
from vkbackup.actions.snapshot import run_snapshot
from vkbackup.config import parse_config
from vkbackup.config.model import Config, HostConfig
from vkbackup.crypto import (
    AnyIdentity,
    generate_hybrid_identity,
    generate_identity,
    write_identity_file,
)
from vkbackup.manifest import open_private
from vkbackup.storage.local import LocalStorage
from vkbackup.transport.local import LocalTransport


def local(_: HostConfig) -> LocalTransport:
    return LocalTransport("local")


def make_cfg(tmp: Path, recipients: list[str], tree: Path) -> Config:
    toml = {
        "storage": {"type": "local", "path": str(tmp / "store")},
        "encryption": {"recipients": recipients},
        "hosts": {
            "box": {
                "address": "127.0.0.1",
                "sources": [
                    {"type": "files", "name": "etc", "paths": [str(tree / ".env")], "secret": True},
                    {"type": "files", "name": "web", "paths": [str(tree / "Caddyfile")]},
                ],
            }
        },
    }
    return parse_config(toml, "test.toml")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / ".env").write_text("SECRET_KEY_BASE=pq-not-in-storage\n")
    (d / "Caddyfile").write_text("api.example.test { reverse_proxy api:8080 }\n")
    return d


def age13_open(ciphertext: bytes, identity_file: Path) -> bytes:
    r = subprocess.run(
        [age13_tool("age"), "-d", "-i", str(identity_file)],
        input=ciphertext,
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout


def check_snapshot(cfg: Config, identity: AnyIdentity, identity_file: Path, tree: Path) -> None:
    storage = LocalStorage(cfg.storage.path)
    m = catalog.resolve(storage, "latest", "box")
    assert len(m.objects) == 2
    for obj in m.objects:
        raw = (cfg.storage.path / obj.key).read_bytes()
        assert b"\n-> mlkem768x25519 " in raw[:4096]
        assert b"pq-not-in-storage" not in raw
        with tarfile.open(fileobj=io.BytesIO(unpack(obj, age13_open(raw, identity_file)))) as tf:
            names = tf.getnames()
        assert names and all(n.startswith(str(tree).lstrip("/")) for n in names)
    priv = open_private(m, [identity])
    assert priv["sources"]["etc"]["meta"]["secret"] is True
    assert age13_open(base64.b64decode(m.private_sealed), identity_file)


def test_snapshot_to_a_pq_recipient_opens_with_stock_age_13(tmp_path: Path, tree: Path) -> None:
    ident = generate_hybrid_identity()
    cfg = make_cfg(tmp_path, [str(ident.recipient())], tree)
    r = run_snapshot(cfg, "box", storage=LocalStorage(cfg.storage.path), connect=local)
    assert r.status == "complete"
    identity_file = tmp_path / "pq.txt"
    write_identity_file(identity_file, ident)
    check_snapshot(cfg, ident, identity_file, tree)
    raw = next((cfg.storage.path / "data").rglob("*.age")).read_bytes()
    assert b"\n-> X25519 " not in raw[:4096]


def test_snapshot_to_mixed_recipients_warns_once_and_both_keys_open(
    tmp_path: Path, tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pq, classic = generate_hybrid_identity(), generate_identity()
    cfg = make_cfg(tmp_path, [str(pq.recipient()), str(classic.recipient())], tree)
    with caplog.at_level(logging.WARNING, logger="vkbackup.crypto.age"):
        r = run_snapshot(cfg, "box", storage=LocalStorage(cfg.storage.path), connect=local)
    assert r.status == "complete"
    mixed = [rec for rec in caplog.records if "only as strong as X25519" in rec.getMessage()]
    assert len(mixed) == 1  # once per run, not once per object
    for ident in (pq, classic):
        path = tmp_path / f"{type(ident).__name__}.txt"
        write_identity_file(path, ident)
        check_snapshot(cfg, ident, path, tree)
