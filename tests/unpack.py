"""Helpers for tests that open snapshot objects: decompress as the manifest records
(zstd or gzip: "auto" picks zstd where the host has it), and the object name a
snapshot of this machine (a local or sshd-on-loopback host) gives a tar."""

from __future__ import annotations

import shutil

from vkbackup.manifest import ObjectRecord
from vkbackup.restore_streams import decoder


def unpack(obj: ObjectRecord, data: bytes) -> bytes:
    """Given an object's decrypted bytes, return them decompressed."""
    dec = decoder(obj.compression, obj.key)
    if dec is None:
        return data
    out = b"".join(dec.feed(data))
    dec.end()
    return out


def local_tar_name(base: str = "files.tar") -> str:
    """The object name of a tar taken from this machine with compression "auto"."""
    return base + (".zst" if shutil.which("zstd") else ".gz") + ".age"
