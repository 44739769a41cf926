"""Benchmark: the bandwidth limit ([transfer], --limit-upload / --limit-download).

Usage:
    .venv/bin/python benchmarks/ratelimit_bench.py [--size 64M] [--rate 4M]
                                                   [--snapshot-size 64M] [--no-snapshot]

What it does (each phase in a fresh child process, so each peak RSS is its own):
  1. reader, unlimited: --size bytes of random data (os.urandom, 1 MiB at a
     time: never held whole) read through a plain pass-through, 1 MiB reads as
     the pipeline does. The baseline for time and peak RSS.
  2. reader, limited: the same through RateLimitedReader at --rate bytes/s.
  3. snapshot, unlimited then limited: a real local snapshot (LocalTransport: bash, tar, gzip
     -> age -> local storage) of one --snapshot-size file of random data, with
     [transfer] limit_upload_kib = --rate / 1024 (0 first); the bytes the storage pulls
     are timed as they leave the limiter.

For each it prints the bytes, wall seconds, the achieved rate (bytes/seconds),
the most bytes handed out in any 1-second window (limit + one bucket at most),
the largest single read, and the child's peak RSS (ru_maxrss). MiB = 2^20
bytes. This is a harness, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIB = 1024 * 1024


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": MIB, "G": 1024 * MIB}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


class RandomSource:
    """*total* random bytes, made a read at a time (never held whole)."""

    def __init__(self, total: int) -> None:
        self.left = total

    def read(self, n: int = -1, /) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


class Recorder:
    """Pass-through that logs (monotonic time, bytes) of every read."""

    def __init__(self, src: Any, log: list[tuple[float, int]]) -> None:
        self.src = src
        self.log = log

    def read(self, n: int = -1, /) -> bytes:
        data: bytes = self.src.read(n)
        if data:
            self.log.append((time.monotonic(), len(data)))
        return data


def max_window(events: list[tuple[float, int]], window: float = 1.0) -> int:
    best = total = j = 0
    for i in range(len(events)):
        while j < len(events) and events[j][0] < events[i][0] + window:
            total += events[j][1]
            j += 1
        best = max(best, total)
        total -= events[i][1]
    return best


def summary(events: list[tuple[float, int]], t0: float, t1: float) -> dict[str, Any]:
    total = sum(n for _, n in events)
    secs = t1 - t0
    return {
        "bytes": total,
        "seconds": round(secs, 3),
        "rate_mib_s": round(total / secs / MIB, 3) if secs else None,
        "max_1s_window_mib": round(max_window(events) / MIB, 3),
        "max_read_kib": round(max((n for _, n in events), default=0) / 1024, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def phase_reader(size: int, rate: int) -> dict[str, Any]:
    from vkbackup.streams import CHUNK, RateLimitedReader

    log: list[tuple[float, int]] = []
    src: Any = RandomSource(size)
    if rate:
        src = RateLimitedReader(src, rate)
    reader = Recorder(src, log)
    t0 = time.monotonic()
    while reader.read(CHUNK):
        pass
    out = summary(log, t0, time.monotonic())
    if rate:
        out["bucket_kib"] = src.limiter.burst / 1024
    return out


def phase_snapshot(size: int, rate: int) -> dict[str, Any]:
    from vkbackup.actions.snapshot import run_snapshot
    from vkbackup.config import parse_config
    from vkbackup.crypto import generate_identity
    from vkbackup.storage.local import LocalStorage
    from vkbackup.storage.throttled import throttle
    from vkbackup.transport.local import LocalTransport

    log: list[tuple[float, int]] = []

    class RecordingStorage(LocalStorage):
        def put(self, key: str, src: Any, **kw: Any) -> Any:
            return super().put(key, Recorder(src, log), **kw)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.bin"
        with data.open("wb") as f:
            src = RandomSource(size)
            while chunk := src.read(MIB):
                f.write(chunk)
        ident = generate_identity()
        cfg = parse_config(
            {
                "storage": {"type": "local", "path": f"{tmp}/store"},
                "encryption": {"recipients": [str(ident.recipient())]},
                "snapshot": {"compression": "gzip"},
                "transfer": {"limit_upload_kib": rate // 1024},
                "hosts": {
                    "box": {
                        "address": "127.0.0.1",
                        "sources": [{"type": "files", "name": "data", "paths": [str(data)]}],
                    }
                },
            },
            "bench.toml",
        )
        storage = throttle(RecordingStorage(cfg.storage.path), cfg.transfer)
        t0 = time.monotonic()
        r = run_snapshot(cfg, "box", storage=storage, connect=lambda _: LocalTransport("local"))
        t1 = time.monotonic()
        out = summary(log, t0, t1)
        out["status"] = r.status
        out["bytes_new"] = r.bytes_new
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="64M")
    ap.add_argument("--rate", default="4M", help="bytes per second (K, M suffixes)")
    ap.add_argument("--snapshot-size", default="64M")
    ap.add_argument("--no-snapshot", action="store_true")
    ap.add_argument("--phase", choices=("reader", "snapshot"), help=argparse.SUPPRESS)
    ap.add_argument("--phase-rate", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase == "reader":
        print(json.dumps(phase_reader(parse_size(args.size), args.phase_rate)))
        return
    if args.phase == "snapshot":
        print(json.dumps(phase_snapshot(parse_size(args.snapshot_size), args.phase_rate)))
        return
    rate = parse_size(args.rate)
    runs = [("reader, unlimited", "reader", 0), (f"reader, {args.rate}/s", "reader", rate)]
    if not args.no_snapshot:
        runs.append(("snapshot, unlimited", "snapshot", 0))
        runs.append((f"snapshot, {args.rate}/s", "snapshot", rate))
    me = [sys.executable, __file__, "--size", args.size, "--snapshot-size", args.snapshot_size]
    print(f"limit {rate / MIB:.3f} MiB/s; reader {args.size}, snapshot {args.snapshot_size}")
    for label, phase, r in runs:
        res = subprocess.run(
            [*me, "--phase", phase, "--phase-rate", str(r)],
            capture_output=True,
            text=True,
            check=True,
        )
        doc = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{label:22} " + "  ".join(f"{k}={v}" for k, v in doc.items()))


if __name__ == "__main__":
    main()
