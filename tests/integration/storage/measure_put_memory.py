"""Measure peak memory and speed of S3Storage.put on a stream of unknown length.

    python -m tests.integration.storage.measure_put_memory [--size-mib 512] [--part-mib 16]
        [--endpoint URL --access-key K --secret-key S] [--s3transfer]

Without --endpoint it starts its own SeaweedFS (tests.lab.s3) in a temp dir.
Prints one JSON line: size, part size, seconds, MB/s, baseline RSS and the
peak RSS growth during the put (VmHWM, reset just before the put, minus the
RSS just before). With --s3transfer it measures boto3's upload_fileobj on the
same kind of non-seekable stream instead, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


class Generated:
    """A non-seekable source of *size* pseudo-random bytes, cheap to produce.
    Like a pipe or an SSH channel it returns at most 1 MiB per read. With
    full_reads=True it fills every read (s3transfer needs that: it takes a
    short read for the end of the stream and uploads a truncated object)."""

    def __init__(self, size: int, full_reads: bool = False) -> None:
        self.remaining = size
        self._block = os.urandom(MIB)
        self._full = full_reads

    def read(self, n: int = -1, /) -> bytes:
        n = min(n if n > 0 else MIB, self.remaining)
        if not self._full:
            n = min(n, MIB)
        self.remaining -= n
        reps, rest = divmod(n, MIB)
        return self._block * reps + self._block[:rest]

    def readable(self) -> bool:
        return True


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> None:
    """Reset this process's RSS high-water mark (Linux >= 4.0: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_bytes() -> int:
    """VmHWM: the peak RSS of this process image. Not ru_maxrss, which Linux
    carries over exec() from the forking parent (a big pytest parent would
    show up as this process's peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(
    endpoint: str, key_id: str, secret: str, size: int, part: int, s3transfer: bool
) -> dict[str, Any]:
    from tests.lab.s3 import S3Server, ensure_bucket
    from vkbackup.config.model import StorageConfig
    from vkbackup.storage.s3 import S3Storage, make_client
    from vkbackup.streams import BytesReader

    bucket = f"mem-{secrets.token_hex(4)}"
    server = S3Server(endpoint, key_id, secret, "us-east-1", Path("."), 0)
    ensure_bucket(server, bucket)
    cfg = StorageConfig(
        type="s3",
        bucket=bucket,
        endpoint_url=endpoint,
        addressing_style="path",
        access_key_id=key_id,
        secret_access_key=secret,
    )
    client = make_client(cfg)
    store = S3Storage(client, bucket, part_size=part)
    store.put("warmup", BytesReader(b"x" * 1000))
    base = rss_bytes()
    reset_peak()
    t0 = time.monotonic()
    if s3transfer:
        from boto3.s3.transfer import TransferConfig

        tc = TransferConfig(multipart_chunksize=part, multipart_threshold=part)
        client.upload_fileobj(Generated(size, full_reads=True), bucket, "obj", Config=tc)
    else:
        store.put("obj", Generated(size))
    secs = time.monotonic() - t0
    peak = peak_bytes()
    head = store.head("obj")
    assert head is not None and head.size == size, head
    return {
        "impl": "s3transfer.upload_fileobj" if s3transfer else "vkbackup S3Storage.put",
        "size_mib": size // MIB,
        "part_mib": part // MIB,
        "seconds": round(secs, 2),
        "mb_per_s": round(size / 1e6 / secs, 1),
        "baseline_rss_mib": round(base / MIB, 1),
        "peak_growth_mib": round((peak - base) / MIB, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--part-mib", type=int, default=16)
    ap.add_argument("--endpoint")
    ap.add_argument("--access-key")
    ap.add_argument("--secret-key")
    ap.add_argument("--s3transfer", action="store_true")
    args = ap.parse_args()
    size, part = args.size_mib * MIB, args.part_mib * MIB
    if args.endpoint:
        doc = measure(args.endpoint, args.access_key, args.secret_key, size, part, args.s3transfer)
    else:
        from tests.integration.conftest import _free_s3_port
        from tests.lab import s3 as lab_s3

        with tempfile.TemporaryDirectory() as d:
            server = lab_s3.start(Path(d), s3_port=_free_s3_port())
            try:
                doc = measure(
                    server.endpoint,
                    server.access_key,
                    server.secret_key,
                    size,
                    part,
                    args.s3transfer,
                )
            finally:
                lab_s3.stop(server)
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
