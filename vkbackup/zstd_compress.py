"""zstd compression on the backup machine, as a streaming Readable.

    host --SSH--> tar (uncompressed) --> ZstdCompressingReader --> age encrypt --> storage

Used by `vkbackup snapshot` when the host has no `zstd` (Debian minimal
installs, older images): the tar crosses the link uncompressed and is
compressed here, before encryption, instead of by `gzip -1` on the host.

Why here and not gzip there: `gzip -1` runs at a few tens of MB/s on one host
core and was the whole bottleneck of such a snapshot (2.6x slower than restic,
issue 18); zstd level 3 runs at several hundred MB/s here and gives a smaller
object. The cost is bandwidth: the link carries the uncompressed tar, so on a
slow WAN link `zstd` on the host (or snapshot.compression = "gzip") is better.

What comes out is what the host's `zstd -q -3 -T0 -c` writes, as far as any
reader can tell (not byte for byte: job boundaries differ): one standard zstd
frame at level 3, with the content checksum the CLI adds by default (so
`zstd -d` and `zstd -t` check the content too), no dictionary. The object is
recorded with compression "zstd" and named `.zst`, so restore, verify and the
break-glass guide (stock `zstd -d`) do not know or care where it was
compressed. An empty input gives an empty frame, as `zstd -c < /dev/null` does.

Memory is bounded, never the stream: the input is read CHUNK bytes at a time,
each compress() call returns at most about that much (compressBound of one
chunk; with a worker, the jobs finished meanwhile), and read(n) hands it out n
bytes at a time. libzstd itself holds the level-3 window (2 MiB for a stream
of unknown size), its tables and, with a worker, the jobs in flight.

Threads: one libzstd worker (nb_workers 1) with 1 MiB jobs. compress() then
hands the chunk to that worker and returns at once, so compressing one chunk
overlaps the reading thread's own work on the previous one (age, two sha256,
the write); compress() releases the GIL either way. Measured on 2 cores with
benchmarks/compress_here.py at 1 GiB (half random, half text): 3.9 s
single-threaded, 3.35 s with one worker (same CPU seconds, 6 paired runs out
of 6), two workers no faster. libzstd's default job at level 3 is 8 MiB and
cost 36 MiB more peak RSS; 1 MiB jobs cost about 8 MiB (23 -> 31 MiB for a
bare compressor), for an output within 1 % of the same size. Output then comes
a job at a time: at most a few MiB held, still handed out n bytes at a time.
A libzstd built without threads (nb_workers bounded to 0) compresses on the
calling thread.

A failing source (the SSH channel dropped, a read error) raises through read()
and the frame is never finished: the bytes handed out so far are a truncated
frame that `zstd -d` refuses, and every later read() raises again, so nothing
downstream can mistake the part for a whole. A source that simply ends early
(the remote command died) ends the frame normally; its exit status is what
tells the snapshot (the object is then deleted, as for any failed stream).

zstd is Python 3.14's `compression.zstd` (the `backports.zstd` package before
3.14, the same code), as for the decoders in `vkbackup.restore.objects`.
"""

from __future__ import annotations

import sys

from vkbackup.errors import SnapshotError
from vkbackup.streams import CHUNK, Readable

if sys.version_info >= (3, 14):  # pragma: no cover - the standard library from 3.14 on
    from compression import zstd  # type: ignore[import-not-found, unused-ignore]
else:
    from backports import zstd

#: the host's `zstd -3`
LEVEL = 3
#: libzstd worker threads (0: compress on the calling thread); see the docstring
WORKERS = 1
#: input per libzstd job when there are workers (libzstd's default at level 3: 8 MiB)
JOB_SIZE = 1 << 20


def max_workers() -> int:
    """libzstd's limit on worker threads: 0 when it was built without threads."""
    return int(zstd.CompressionParameter.nb_workers.bounds()[1])


class SourceFailed(SnapshotError):
    """read() after the source raised: the frame was never finished."""


class ZstdCompressingReader:
    """Readable of one zstd frame (level *level*, content checksum) of the bytes of
    *src*. ``consumed`` counts the bytes read from *src*."""

    def __init__(self, src: Readable, level: int = LEVEL, *, workers: int = WORKERS) -> None:
        self._src = src
        options: dict[int, int] = {
            zstd.CompressionParameter.compression_level: level,
            zstd.CompressionParameter.checksum_flag: 1,
        }
        workers = min(workers, max_workers())
        if workers > 0:
            options[zstd.CompressionParameter.nb_workers] = workers
            options[zstd.CompressionParameter.job_size] = JOB_SIZE
        self._c = zstd.ZstdCompressor(options=options)
        self._out = b""  # compressed bytes not yet handed out, from self._pos
        self._pos = 0
        self._done = False  # the frame is finished (flushed)
        self._failed: BaseException | None = None
        self.consumed = 0

    def read(self, n: int = -1, /) -> bytes:
        if self._failed is not None:
            raise SourceFailed(
                f"the stream being compressed failed earlier: {self._failed}"
            ) from self._failed
        if n == 0:
            return b""
        limit = n if n > 0 else CHUNK
        while self._pos >= len(self._out):
            if self._done:
                return b""
            try:
                data = self._src.read(CHUNK)
            except BaseException as e:
                self._failed = e
                self._out, self._pos = b"", 0
                raise
            if data:
                self.consumed += len(data)
                self._out = self._c.compress(data)
            else:
                self._out = self._c.flush()  # FLUSH_FRAME: the epilogue and checksum
                self._done = True
            self._pos = 0
        end = self._pos + limit
        out = self._out[self._pos : end] if self._pos or end < len(self._out) else self._out
        self._pos += len(out)
        if self._pos >= len(self._out):
            self._out, self._pos = b"", 0  # let the piece go
        return out
