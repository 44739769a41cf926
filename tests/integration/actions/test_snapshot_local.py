"""Snapshot of `files` sources through the real pipeline on this machine:
LocalTransport (bash, tar, gzip) -> age encryption -> local storage -> manifest.
The same code path runs over SSH in the end-to-end tests."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from tests.unpack import stock_decrypt, unpack
from vkbackup import catalog, layout
from vkbackup.actions.snapshot import run_snapshot
from vkbackup.config import parse_config
from vkbackup.config.model import Config, HostConfig
from vkbackup.crypto import generate_identity, write_identity_file
from vkbackup.errors import LockError
from vkbackup.manifest import open_private
from vkbackup.storage.local import LocalStorage
from vkbackup.transport.local import LocalTransport


def local(_: HostConfig) -> LocalTransport:
    return LocalTransport("local")


def make_cfg(tmp: Path, recipient: str, paths: list[str], extra: str = "") -> Config:
    toml = {
        "storage": {"type": "local", "path": str(tmp / "store")},
        "encryption": {"recipients": [recipient]},
        "hosts": {
            "box": {
                "address": "127.0.0.1",
                "sources": [
                    {"type": "files", "name": "etc", "paths": paths, "secret": True},
                ],
            }
        },
    }
    if extra:
        toml["hosts"]["box"]["sources"].append(  # type: ignore[index]
            {"type": "files", "name": "other", "paths": [extra]}
        )
    return parse_config(toml, "test.toml")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / ".env").write_text("SECRET_KEY_BASE=abc123-not-in-storage\n")
    os.chmod(d / ".env", 0o600)
    (d / "Caddyfile").write_text("api.example.test { reverse_proxy api:8080 }\n")
    return d


def test_files_snapshot_roundtrip_and_reuse(tmp_path: Path, tree: Path) -> None:
    ident = generate_identity()
    cfg = make_cfg(tmp_path, str(ident.recipient()), [str(tree / ".env"), str(tree / "C*")])
    storage = LocalStorage(cfg.storage.path)
    r1 = run_snapshot(cfg, "box", storage=storage, connect=local)
    assert r1.status == "complete"
    m = catalog.resolve(storage, "latest", "box")
    assert m.id == r1.id
    assert len(m.objects) == 1
    obj = m.objects[0]
    # stored bytes are an age file whose sha256 matches the manifest
    raw = (cfg.storage.path / obj.key).read_bytes()
    assert raw.startswith(b"age-encryption.org/v1\n")
    assert b"abc123-not-in-storage" not in raw
    import hashlib

    assert hashlib.sha256(raw).hexdigest() == obj.sha256 and len(raw) == obj.size
    # opened with stock age and the identity file, not vkbackup's own decoder
    identity_file = tmp_path / "identity.txt"
    write_identity_file(identity_file, ident)  # mode 0600
    plain = unpack(obj, stock_decrypt(raw, identity_file))
    with tarfile.open(fileobj=io.BytesIO(plain)) as tf:
        names = sorted(tf.getnames())
        env = tf.getmember(str(tree / ".env").lstrip("/"))
        assert env.mode & 0o777 == 0o600
        f = tf.extractfile(env)
        assert f is not None and f.read() == b"SECRET_KEY_BASE=abc123-not-in-storage\n"
    assert names == sorted(str(p).lstrip("/") for p in (tree / ".env", tree / "Caddyfile"))
    # secrets: neither the paths nor the content are in the public manifest
    public = (cfg.storage.path / layout.manifest_key("box", m.id)).read_text()
    assert "abc123" not in public and str(tree) not in public
    priv = open_private(m, [ident])
    assert priv["sources"]["etc"]["meta"]["secret"] is True
    sealed = base64.b64decode(m.private_sealed)
    assert json.loads(stock_decrypt(sealed, identity_file)) == priv
    # unchanged -> the second snapshot references the first one's object
    r2 = run_snapshot(cfg, "box", storage=storage, connect=local)
    assert r2.bytes_new == 0 and r2.bytes_reused == obj.size
    m2 = catalog.resolve(storage, "latest", "box")
    assert m2.objects[0].key == obj.key and m2.objects[0].uploaded_in == m.id
    # a change -> uploaded again
    (tree / "Caddyfile").write_text("changed\n")
    r3 = run_snapshot(cfg, "box", storage=storage, connect=local)
    assert r3.bytes_new > 0
    assert storage.head(layout.lock_key("box")) is None


def test_missing_path_fails_the_source_and_names_it(tmp_path: Path, tree: Path) -> None:
    ident = generate_identity()
    cfg = make_cfg(
        tmp_path, str(ident.recipient()), [str(tree / ".env")], extra=str(tree / "nope*")
    )
    storage = LocalStorage(cfg.storage.path)
    r = run_snapshot(cfg, "box", storage=storage, connect=local)
    assert r.status == "partial"
    bad = next(s for s in r.sources if s.name == "other")
    assert bad.status == "failed" and bad.error is not None and "nope*" in bad.error
    m = catalog.load_manifest(storage, "box", r.id)
    assert m.status == "partial"
    assert [o.source for o in m.objects] == ["etc"]


def test_all_failed_leaves_no_manifest_and_no_objects(tmp_path: Path) -> None:
    ident = generate_identity()
    cfg = make_cfg(tmp_path, str(ident.recipient()), [str(tmp_path / "missing")])
    storage = LocalStorage(cfg.storage.path)
    r = run_snapshot(cfg, "box", storage=storage, connect=local)
    assert r.status == "failed" and r.manifest_key is None
    assert [i.key for i in storage.list("")] == []


def test_second_snapshot_refused_while_locked(tmp_path: Path, tree: Path) -> None:
    from vkbackup import lock

    ident = generate_identity()
    cfg = make_cfg(tmp_path, str(ident.recipient()), [str(tree / ".env")])
    storage = LocalStorage(cfg.storage.path)
    held = lock.acquire(storage, "box", "20261126T000000Z-0000")
    with pytest.raises(LockError) as exc:
        run_snapshot(cfg, "box", storage=storage, connect=local)
    assert f"pid {os.getpid()}" in str(exc.value)
    lock.release(storage, "box", held)
    assert run_snapshot(cfg, "box", storage=storage, connect=local).status == "complete"


def test_stale_lock_reported_with_age_and_broken_only_on_request(
    tmp_path: Path, tree: Path
) -> None:
    ident = generate_identity()
    cfg = make_cfg(tmp_path, str(ident.recipient()), [str(tree / ".env")])
    storage = LocalStorage(cfg.storage.path)
    lockfile = cfg.storage.path / layout.lock_key("box")
    lockfile.parent.mkdir(parents=True, exist_ok=True)
    lockfile.write_text(
        json.dumps(
            {
                "owner": "root@elsewhere",
                "machine": "elsewhere",
                "pid": 4242,
                "host": "box",
                "time": "2026-01-01T00:00:00+00:00",
                "snapshot_id": "20260101T000000Z-0000",
            }
        )
    )
    with pytest.raises(LockError) as exc:
        run_snapshot(cfg, "box", storage=storage, connect=local)
    assert "stale lock" in str(exc.value) and "root@elsewhere" in str(exc.value)
    assert "ago" in str(exc.value)
    r = run_snapshot(cfg, "box", storage=storage, connect=local, break_lock=True)
    assert r.status == "complete"
