"""Benchmark: peak memory of streaming one object through age encryption, X25519 vs PQ.

Usage:
    .venv/bin/python benchmarks/pq_stream_memory.py [--mib 512]

Each kind runs in its own child process (so one's peak cannot hide the other's):
it streams --mib MiB of zeros through EncryptingReader to nowhere, 1 MiB reads,
and prints the output size, the time and the process's peak RSS. A post-quantum
recipient changes only the header (one ML-KEM-768 encapsulation per object), so
the streaming memory must stay the same; the difference is the ML-KEM module's
import. A harness, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

from vkbackup.crypto import EncryptingReader, generate_hybrid_identity, generate_identity


class Zeros:
    def __init__(self, n: int) -> None:
        self.n = n

    def read(self, k: int = -1, /) -> bytes:
        k = min(k if k > 0 else 1 << 20, self.n)
        self.n -= k
        return b"\0" * k


def child(kind: str, mib: int) -> None:
    ident = generate_hybrid_identity() if kind == "pq" else generate_identity()
    reader = EncryptingReader(Zeros(mib << 20), [ident.recipient()])
    t0 = time.perf_counter()
    total = 0
    while chunk := reader.read(1 << 20):
        total += len(chunk)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    took = time.perf_counter() - t0
    print(f"{kind:7} {total / 1e6:7.0f} MB in {took:5.2f} s, peak RSS {rss:5.1f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--child", choices=("x25519", "pq"))
    args = ap.parse_args()
    if args.child:
        child(args.child, args.mib)
        return
    for kind in ("x25519", "pq"):
        subprocess.run(
            [sys.executable, __file__, "--child", kind, "--mib", str(args.mib)], check=True
        )


if __name__ == "__main__":
    main()
