"""Benchmark: the bandwidth limit ([transfer], --limit-upload / --limit-download).

Usage:
    .venv/bin/python benchmarks/ratelimit_bench.py [--size 64M] [--rate 4M]
                                                   [--snapshot-size 64M] [--no-snapshot]
    .venv/bin/python benchmarks/ratelimit_bench.py --lab [--size 64M] [--rate 4M]

What it does (each phase in a fresh child process, so each peak RSS is its own):
  1. reader, unlimited: --size bytes of random data (os.urandom, 1 MiB at a
     time: never held whole) read through a plain pass-through, 1 MiB reads as
     the pipeline does. The baseline for time and peak RSS.
  2. reader, limited: the same through RateLimitedReader at --rate bytes/s.
  3. snapshot, unlimited then limited: a real local snapshot (LocalTransport: bash, tar, gzip
     -> age -> local storage) of one --snapshot-size file of random data, with
     [transfer] limit_upload_kib = --rate / 1024 (0 first); the bytes the storage pulls
     are timed as they leave the limiter.

With --lab (the running lab, `python -m tests.lab up`): a docker volume of
--size random bytes on the lab's prod host, snapshotted over SSH by the real
CLI (`vkbackup snapshot prod --only ratelimit --json`) into a local directory,
unlimited then at --rate, then read back by `vkbackup verify --no-decrypt`
unlimited then at --rate. The rate is the stored (ciphertext) bytes over the
source's own seconds (snapshot) or the command's wall time (verify); the peak
RSS is the vkbackup process's (wait4). The e2e test
tests/e2e/test_ratelimit.py asserts only the upper side of the same numbers.

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


def lab_runs(size: int, rate: int) -> None:
    """--lab: the real CLI against the lab's prod host (see the module docstring)."""
    import re

    from tests.lab.api import get_lab

    lab = get_lab(bring_up=False)
    volume = "vk_ratelimit_bench"
    mp = f"$(docker volume inspect -f '{{{{.Mountpoint}}}}' {volume})"
    lab.ssh("prod", f"docker volume create {volume} >/dev/null")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "store"
            text = lab.config_path.read_text()
            text = re.sub(r'(?m)^path = ".*"$', f'path = "{store}"', text, count=1)
            text += (
                '\n[[hosts.prod.sources]]\ntype = "docker-volume"\nname = "ratelimit"\n'
                f'volume = "{volume}"\nstop = []\n'
            )
            cfg = Path(tmp) / "vkbackup.toml"
            cfg.write_text(text)
            cfg.chmod(0o600)
            base = [sys.executable, "-m", "vkbackup", "--config", str(cfg)]
            kib = str(rate // 1024)
            print(f"lab: prod volume of {size / MIB:.0f} MiB random data; limit {rate / MIB} MiB/s")
            for label, limit in (("unlimited", "0"), (f"{rate / MIB:g} MiB/s", kib)):
                # new random content and no chain: each run uploads a new full of --size
                lab.ssh("prod", f"head -c {size} /dev/urandom > {mp}/blob && sync")
                lab.ssh("prod", f"rm -rf /var/lib/vkbackup/snar/{volume}")
                argv = [*base, "snapshot", "prod", "--only", "ratelimit", "--json"]
                out, wall, rss = _run([*argv, "--limit-upload", limit])
                src = next(s for s in json.loads(out)["sources"] if s["name"] == "ratelimit")
                moved, secs = src["bytes_new"], src["seconds"]
                print(
                    f"snapshot {label:10} bytes={moved} source_seconds={secs:.2f} "
                    f"rate_mib_s={moved / secs / MIB:.3f} wall={wall:.2f} peak_rss_mib={rss:.1f}"
                )
                sid = json.loads(out)["id"]
                stored = sum(p.stat().st_size for p in store.rglob(f"data/*/{sid}/*/*"))
                out, wall, rss = _run(
                    [*base, "verify", sid, "--no-decrypt", "--limit-download", limit]
                )
                print(
                    f"verify   {label:10} bytes={stored} wall={wall:.2f} "
                    f"rate_mib_s={stored / wall / MIB:.3f} peak_rss_mib={rss:.1f}"
                )
    finally:
        lab.ssh("prod", f"docker volume rm -f {volume}; rm -rf /var/lib/vkbackup/snar/{volume}")


def _run(argv: list[str]) -> tuple[str, float, float]:
    """Run *argv*; return its stdout, wall seconds and its own peak RSS in MiB (wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode not in (0, 3):
            tail = err.read().decode()[-2000:]
            raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}\n{tail}")
        return out.read().decode(), wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="64M")
    ap.add_argument("--rate", default="4M", help="bytes per second (K, M suffixes)")
    ap.add_argument("--snapshot-size", default="64M")
    ap.add_argument("--no-snapshot", action="store_true")
    ap.add_argument("--lab", action="store_true", help="the real CLI against the lab's prod")
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
    if args.lab:
        lab_runs(parse_size(args.size), rate)
        return
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
