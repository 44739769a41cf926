"""What signing costs: one SSH signature (sign, then verify) of a manifest.

    .venv/bin/python benchmarks/signing_bench.py [--size 200000] [--repeat 200]

A lab manifest at scale 1 is about 80 KB; every record is signed once when it
is written and checked once each time a command reads it.
"""

from __future__ import annotations

import argparse
import os
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vkbackup import sshsig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=200_000, help="manifest bytes")
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    key = Ed25519PrivateKey.generate()
    message = os.urandom(args.size)
    t0 = time.perf_counter()
    for _ in range(args.repeat):
        signature = sshsig.sign(key, message)
    t1 = time.perf_counter()
    for _ in range(args.repeat):
        sshsig.verify(signature, message, [key.public_key()], "manifest")
    t2 = time.perf_counter()
    per = 1000 / args.repeat
    print(
        f"{args.size} bytes: sign {(t1 - t0) * per:.3f} ms, verify {(t2 - t1) * per:.3f} ms, "
        f"signature {len(signature)} bytes"
    )


if __name__ == "__main__":
    main()
