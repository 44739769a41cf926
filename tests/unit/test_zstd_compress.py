"""`ZstdCompressingReader`, zstd on the backup machine for a host without zstd: what it
writes is a standard zstd frame that the restore side's decoder (`Unzstd`) and the
stock `zstd -d` of the break-glass guide both read back byte for byte; its reads are
bounded; an empty stream is an empty frame; a source that fails leaves a truncated
frame that nothing accepts as whole, and the reader stays failed."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from tests.realparts import require
from vkbackup import zstd_compress
from vkbackup.errors import IntegrityError
from vkbackup.restore.objects import DecodingReader, Unzstd
from vkbackup.streams import CHUNK, BytesReader, iter_chunks
from vkbackup.zstd_compress import WORKERS, SourceFailed, ZstdCompressingReader


def mixed(n: int) -> bytes:
    """Half random, half text: like a volume of attachments and logs."""
    text = b"".join(b"%08d GET /api/v1/accounts/%d 200\n" % (i, i % 97) for i in range(n // 64))
    return os.urandom(n // 2) + text[: n - n // 2]


def compress(data: bytes, read_size: int = CHUNK, workers: int = WORKERS) -> bytes:
    reader = ZstdCompressingReader(BytesReader(data), workers=workers)
    out = b"".join(iter_chunks(reader, read_size))
    assert reader.consumed == len(data)
    return out


def unzstd(blob: bytes) -> bytes:
    """The restore side's decoder."""
    return b"".join(iter_chunks(DecodingReader(BytesReader(blob), Unzstd("obj.tar.zst"))))


def stock_zstd() -> str:
    path = shutil.which("zstd")
    if path is None:
        require("zstd not installed (apt-get install zstd)")
    assert path is not None
    return path


def zstd_cli(*args: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([stock_zstd(), *args], input=data, capture_output=True, check=False)


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("size", [0, 1, 1000, CHUNK - 1, CHUNK, 3 * CHUNK + 12345])
def test_round_trip_with_the_restore_decoder_and_stock_zstd(size: int, workers: int) -> None:
    data = mixed(size)
    blob = compress(data, workers=workers)
    assert unzstd(blob) == data
    res = zstd_cli("-q", "-d", "-c", data=blob)
    assert res.returncode == 0, res.stderr
    assert res.stdout == data


def test_it_is_a_level_3_frame_with_a_checksum_like_the_hosts() -> None:
    data = mixed(2 * CHUNK)
    blob = compress(data)
    assert blob[:4] == b"\x28\xb5\x2f\xfd"  # zstd magic
    assert blob[4] & 0x04  # frame header descriptor: content checksum present
    assert zstd_cli("-q", "-t", data=blob).returncode == 0
    # a flipped byte in the middle is caught by the decoder (the checksum, at worst)
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0x40
    assert zstd_cli("-q", "-t", data=bytes(bad)).returncode != 0
    # about as small as the host's `zstd -3` (same level, same library family)
    host = zstd_cli("-q", "-3", "-c", data=data).stdout
    assert abs(len(blob) - len(host)) <= len(host) // 20


def test_text_compresses() -> None:
    text = b"lorem ipsum dolor sit amet, consectetur adipiscing elit\n" * 50_000
    assert len(compress(text)) < len(text) // 50


@pytest.mark.parametrize("read_size", [7, 4096, CHUNK])
def test_reads_are_bounded_by_what_was_asked(read_size: int) -> None:
    data = os.urandom(CHUNK) + b"a" * CHUNK  # incompressible, then very compressible
    pieces = list(iter_chunks(ZstdCompressingReader(BytesReader(data)), read_size))
    assert pieces and max(len(p) for p in pieces) <= read_size
    assert unzstd(b"".join(pieces)) == data


def test_byte_by_byte_reads_give_the_same_frame() -> None:
    data = mixed(5000)
    pieces = list(iter_chunks(ZstdCompressingReader(BytesReader(data)), 1))
    assert {len(p) for p in pieces} == {1}
    assert b"".join(pieces) == compress(data)


def test_a_read_of_no_size_takes_at_most_one_chunk() -> None:
    data = os.urandom(3 * CHUNK)
    reader = ZstdCompressingReader(BytesReader(data))
    pieces = []
    while piece := reader.read():
        assert len(piece) <= CHUNK
        pieces.append(piece)
    assert unzstd(b"".join(pieces)) == data


class Recorder:
    """Hands out *data* and records how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        self._src = BytesReader(data)
        self.asked: list[int] = []

    def read(self, n: int = -1, /) -> bytes:
        self.asked.append(n)
        return self._src.read(n)


@pytest.mark.parametrize("workers", [0, 1])
def test_the_source_is_read_a_chunk_at_a_time_never_whole(workers: int) -> None:
    src = Recorder(mixed(16 * CHUNK))
    reader = ZstdCompressingReader(src, workers=workers)
    first = reader.read(100)
    # 100 bytes out after one chunk in; with a worker, after the few chunks its
    # queue holds (1 MiB jobs), never the stream
    assert first and len(src.asked) <= (1 if workers == 0 else 4)
    b"".join(iter_chunks(reader))
    assert src.asked and all(0 < n <= CHUNK for n in src.asked)
    assert reader.read(10) == b""  # and it stays at the end


def test_an_empty_stream_is_an_empty_frame() -> None:
    blob = compress(b"")
    assert blob[:4] == b"\x28\xb5\x2f\xfd"
    assert unzstd(blob) == b""
    res = zstd_cli("-q", "-d", "-c", data=blob)
    assert res.returncode == 0 and res.stdout == b""
    # the same bytes the host's `zstd -c < /dev/null` gives, as far as readers go
    assert unzstd(zstd_cli("-q", "-3", "-c", data=b"").stdout) == b""


class Breaks:
    """Hands out *good* bytes, then raises as a dropped SSH channel would."""

    def __init__(self, good: bytes) -> None:
        self._src = BytesReader(good)
        self.calls = 0

    def read(self, n: int = -1, /) -> bytes:
        self.calls += 1
        data = self._src.read(n)
        if not data:
            raise OSError("channel closed by the host")
        return data


@pytest.mark.parametrize("workers", [0, 1])
def test_a_source_error_propagates_and_leaves_no_whole_frame(workers: int) -> None:
    good = mixed(3 * CHUNK)
    src = Breaks(good)
    reader = ZstdCompressingReader(src, workers=workers)
    out = bytearray()
    with pytest.raises(OSError, match="channel closed"):
        while True:
            out += reader.read(64 * 1024)
    # what was handed out is a truncated frame: every reader refuses it
    res = zstd_cli("-q", "-d", "-c", data=bytes(out))
    assert res.returncode != 0
    with pytest.raises(IntegrityError, match="truncated"):
        unzstd(bytes(out))
    # the reader stays failed: no later read finishes the frame
    calls = src.calls
    with pytest.raises(SourceFailed, match="channel closed"):
        reader.read(10)
    with pytest.raises(SourceFailed):
        reader.read()
    assert src.calls == calls  # the source is not read again


@pytest.mark.parametrize("workers", [0, 1])
def test_the_output_is_the_same_whatever_the_read_sizes(workers: int) -> None:
    data = mixed(2 * CHUNK + 99)
    digests = {hashlib.sha256(compress(data, n, workers)).hexdigest() for n in (512, 65536, CHUNK)}
    assert len(digests) == 1


def test_a_libzstd_without_threads_compresses_on_the_calling_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert zstd_compress.max_workers() > 0  # this machine's libzstd has threads
    monkeypatch.setattr(zstd_compress, "max_workers", lambda: 0)
    data = mixed(4 * CHUNK)
    src = Recorder(data)
    reader = ZstdCompressingReader(src, workers=2)
    first = reader.read(100)
    assert first and len(src.asked) == 1  # one chunk in, output at once: no worker
    assert unzstd(first + b"".join(iter_chunks(reader))) == data
