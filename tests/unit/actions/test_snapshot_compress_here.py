"""A host without zstd (issue 18): with snapshot.compression "auto" (and "zstd"), the
tar leaves the host uncompressed and is compressed with zstd here, before age.

Real snapshots on this machine, as tests/unit/actions/test_key_rotation.py runs them
(LocalTransport: bash, GNU tar; age; a local storage directory), with the real facts
script. The "host" is this machine seen through a PATH that has no zstd (a directory
of links to everything on PATH but zstd and docker) and whose gzip is a tripwire that
notes every run. So the host-side detection itself finds no zstd, and any compressor
the host ran would show.

* the object is `files.tar.zst`, recorded "zstd", compressed_on "here"; the host's
  command has no compress stage and no compressor ran there;
* stock `zstd -d` (the break-glass guide) and vkbackup's restore path give back the
  tar byte for byte, the one GNU tar writes of the same files;
* the next snapshot references it (the fingerprint does not depend on where it was
  compressed), and so does one taken once the host has zstd again.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import ClassVar

import pytest

from tests.realparts import require
from vkbackup import catalog
from vkbackup.actions.snapshot import SnapshotResult, run_snapshot
from vkbackup.config import parse_config
from vkbackup.config.model import Config, HostConfig
from vkbackup.crypto import X25519Identity, decrypt_bytes, generate_identity
from vkbackup.manifest import open_private
from vkbackup.restore.objects import TarCheck, open_object
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import iter_chunks
from vkbackup.transport.local import LocalProcess, LocalTransport

HIDDEN = {"zstd", "zstdmt", "zstdcat", "unzstd", "pzstd", "docker", "gzip"}


class Recording(LocalTransport):
    """LocalTransport that notes every streamed command (the sources' streams)."""

    started: ClassVar[list[list[str]]] = []

    def start(self, argv: list[str]) -> LocalProcess:
        Recording.started.append(argv)
        return super().start(argv)


def connect(_: HostConfig) -> LocalTransport:
    return Recording("box")


def no_zstd_path(tmp: Path, marker: Path) -> str:
    """A PATH like this machine's without zstd (nor docker: no daemon is touched), whose
    gzip writes *marker* before running the real one."""
    bin_dir = tmp / "host-bin"
    bin_dir.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not d or not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            target = os.path.join(d, name)
            link = bin_dir / name
            if name in HIDDEN or link.exists() or not os.access(target, os.X_OK):
                continue
            link.symlink_to(target)
    real_gzip = shutil.which("gzip")
    assert real_gzip is not None
    trip = bin_dir / "gzip"
    trip.write_text(f'#!/bin/sh\necho "gzip $*" >> {marker}\nexec {real_gzip} "$@"\n')
    trip.chmod(trip.stat().st_mode | stat.S_IXUSR)
    return str(bin_dir)


def make_cfg(tmp: Path, ident: X25519Identity, tree: Path, compression: str) -> Config:
    doc = {
        "storage": {"type": "local", "path": str(tmp / "store")},
        "encryption": {"recipients": [str(ident.recipient())]},
        "snapshot": {"compression": compression},
        "hosts": {
            "box": {
                "address": "127.0.0.1",
                "sources": [{"type": "files", "name": "etc", "paths": [str(tree / "*")]}],
            }
        },
    }
    return parse_config(doc, "test.toml")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "app.conf").write_text("listen = 8080\n" * 1000)
    (d / "blob.bin").write_bytes(os.urandom(3 << 20))  # several input chunks
    (d / "empty").write_bytes(b"")
    sub = d / "sub"
    sub.mkdir()
    (sub / "notes.txt").write_text("text that compresses\n" * 20_000)
    return d


def snap(cfg: Config, storage: LocalStorage) -> SnapshotResult:
    r = run_snapshot(cfg, "box", storage=storage, connect=connect)
    assert r.status == "complete", [s.error for s in r.sources]
    return r


@pytest.mark.parametrize("compression", ["auto", "zstd"])
def test_a_host_without_zstd_gets_zstd_objects_compressed_here(
    tmp_path: Path, tree: Path, monkeypatch: pytest.MonkeyPatch, compression: str
) -> None:
    zstd = shutil.which("zstd")
    if zstd is None:
        require("zstd not installed (apt-get install zstd)")
    assert zstd is not None
    tar = shutil.which("tar")
    assert tar is not None
    ident = generate_identity()
    storage = LocalStorage(tmp_path / "store")
    cfg = make_cfg(tmp_path, ident, tree, compression)
    marker = tmp_path / "gzip-ran"
    real_path = os.environ["PATH"]
    monkeypatch.setenv("PATH", no_zstd_path(tmp_path, marker))
    Recording.started = []

    r = snap(cfg, storage)

    # the host ran tar and no compressor
    (argv,) = Recording.started
    assert argv[-1].strip().splitlines()[-1] == 'tar -C / -cf - --numeric-owner -- "${files[@]}"'
    assert not marker.exists()
    # a .zst object, recorded as zstd, compressed here
    m = catalog.load_manifest(storage, "box", r.id)
    (obj,) = m.objects
    assert obj.name == "files.tar.zst.age" and obj.compression == "zstd"
    private = open_private(m, [ident])
    assert "zstd" not in private["facts"]["tools"] and "gzip" in private["facts"]["tools"]
    assert private["objects"][obj.key]["compressed_on"] == "here"
    assert r.to_json()["sources"][0]["compressed_on"] == "here"

    # byte for byte: stock zstd -d of the decrypted object is the tar GNU tar writes
    plain = decrypt_bytes((storage.root / obj.key).read_bytes(), [ident], name=obj.key)
    assert plain[:4] == b"\x28\xb5\x2f\xfd"
    unpacked = subprocess.run([zstd, "-q", "-d", "-c"], input=plain, capture_output=True)
    assert unpacked.returncode == 0, unpacked.stderr
    members = [p["path"].lstrip("/") for p in private["sources"]["etc"]["meta"]["files"]]
    expected = subprocess.run(
        [tar, "-C", "/", "-cf", "-", "--numeric-owner", "--", *members],
        capture_output=True,
        check=True,
    ).stdout
    assert unpacked.stdout == expected
    # and vkbackup's restore path (decompressed here, tar guard on) reads the same bytes
    paths = [p["path"] for p in private["sources"]["etc"]["meta"]["files"]]
    check = TarCheck.files(paths, [str(tree / "*")])
    with open_object(storage, obj, [ident], tar=check, decompress=True) as s:
        assert b"".join(iter_chunks(s)) == expected
    # extracted with stock tar, the files are the originals
    out = tmp_path / "restored"
    out.mkdir()
    subprocess.run([tar, "-C", str(out), "-xf", "-"], input=unpacked.stdout, check=True)
    for f in tree.rglob("*"):
        twin = out / str(f).lstrip("/")
        assert twin.is_dir() if f.is_dir() else twin.read_bytes() == f.read_bytes(), f

    # unchanged: referenced, not uploaded again
    r2 = snap(cfg, storage)
    assert r2.bytes_new == 0 and r2.bytes_reused == obj.size
    m2 = catalog.load_manifest(storage, "box", r2.id)
    assert [o.key for o in m2.objects] == [obj.key]
    # the host got zstd: still the same object (where it was compressed is not content)
    monkeypatch.setenv("PATH", real_path)
    r3 = snap(cfg, storage)
    assert r3.bytes_new == 0
    assert [o.key for o in catalog.load_manifest(storage, "box", r3.id).objects] == [obj.key]


def test_gzip_still_means_gzip_on_the_host(
    tmp_path: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ident = generate_identity()
    storage = LocalStorage(tmp_path / "store")
    marker = tmp_path / "gzip-ran"
    monkeypatch.setenv("PATH", no_zstd_path(tmp_path, marker))
    Recording.started = []
    r = snap(make_cfg(tmp_path, ident, tree, "gzip"), storage)
    assert Recording.started[0][-1].strip().splitlines()[-1].endswith(" | gzip -1 -c")
    assert marker.read_text().startswith("gzip -1 -c")
    m = catalog.load_manifest(storage, "box", r.id)
    (obj,) = m.objects
    assert obj.name == "files.tar.gz.age" and obj.compression == "gzip"
    assert open_private(m, [ident])["objects"][obj.key]["compressed_on"] == "host"
    assert r.to_json()["sources"][0]["compressed_on"] == "host"
