"""The tests' oracle for snapshot objects: stock tools only, never vkbackup's own
decoders. An object is decrypted by Debian's `age -d -i IDENTITY` and decompressed
by `zstd -d` or `gzip -d` as its manifest record says, so a bug shared by the
writer and the reader cannot make a test pass. Also the object name a snapshot of
this machine (a local or sshd-on-loopback host) gives a tar."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from tests.realparts import require
from vkbackup.manifest import ObjectRecord
from vkbackup.storage.base import Storage

DECOMPRESS = {
    "zstd": ["zstd", "-d", "-c", "-q"],
    "gzip": ["gzip", "-d", "-c"],
}


def _stock(argv: list[str], data: bytes, what: str) -> bytes:
    exe = shutil.which(argv[0])
    if exe is None:
        require(f"{argv[0]} not installed (apt-get install {argv[0]})")
    r = subprocess.run([exe, *argv[1:]], input=data, capture_output=True, timeout=300)
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip()
        raise AssertionError(f"{what}: `{' '.join(argv)}` exited {r.returncode}: {err}")
    return r.stdout


def unpack(obj: ObjectRecord, data: bytes) -> bytes:
    """Given an object's decrypted bytes, return them decompressed by zstd or gzip."""
    if obj.compression == "none":
        return data
    if obj.compression not in DECOMPRESS:
        raise AssertionError(f"{obj.key}: unknown compression {obj.compression!r}")
    return _stock(DECOMPRESS[obj.compression], data, obj.key)


def stock_decrypt(ciphertext: bytes, identity_file: Path) -> bytes:
    """Decrypt an age file with stock age and the (unencrypted) identity file."""
    return _stock(["age", "-d", "-i", str(identity_file)], ciphertext, str(identity_file))


def stock_open(storage: Storage, obj: ObjectRecord, identity_file: Path) -> bytes:
    """An object's plaintext, decompressed: its stored bytes checked against the
    manifest's size and sha256 (hashlib), then stock age, then stock zstd/gzip."""
    with storage.open(obj.key) as f:
        raw = f.read()
    assert len(raw) == obj.size, (obj.key, len(raw), obj.size)
    assert hashlib.sha256(raw).hexdigest() == obj.sha256, obj.key
    return unpack(obj, stock_decrypt(raw, identity_file))


def local_tar_name(base: str = "files.tar") -> str:
    """The object name of a tar taken from this machine with compression "auto"."""
    return base + (".zst" if shutil.which("zstd") else ".gz") + ".age"
