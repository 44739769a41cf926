"""Benchmark: what a post-quantum recipient costs per object, next to X25519.

Usage:
    .venv/bin/python benchmarks/pq_bench.py [--count 2000] [--repeat 5] [--mib 8]

A recipient only changes how the 16-byte file key is wrapped in the header,
so the cost of choosing age1pq1... over age1... is a fixed amount per object
(one ML-KEM-768 encapsulation and one X25519 exchange to write it, one
decapsulation and one exchange to read it), never per byte. This measures
exactly that, in one process, page cache and imports warm:

  wrap / unwrap    Recipient.wrap(file key) and Identity.unwrap(stanzas) alone
  header enc/dec   a whole empty object: encrypt_bytes(b"") + decrypt_bytes,
                   i.e. file key, stanzas, header MAC, payload key, final chunk
  mixed            one PQ and one X25519 recipient (what a mixed config costs)

for --count objects, best mean of --repeat rounds, in CPU microseconds per
object (thread CPU time: on a shared machine other processes stretch wall
time, not the work; the best round is the least disturbed). For scale it also
prints the CPU time to stream --mib MiB through the same readers (X25519),
the per-byte cost that dominates any real object, the header size of each
kind, and the one-off cost of loading a PQ identity (it expands the ML-KEM
key from its seed once per process).
This is a harness, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from collections.abc import Callable

from vkbackup.crypto import (
    DecryptingReader,
    EncryptingReader,
    Identity,
    Recipient,
    decrypt_bytes,
    encrypt_bytes,
    generate_hybrid_identity,
    generate_identity,
    parse_identity,
)
from vkbackup.crypto.header import find_header_end
from vkbackup.streams import BytesReader


def per_call_us(fn: Callable[[], object], count: int, repeat: int) -> float:
    """Return the best mean CPU time of *fn* over *repeat* rounds of *count* calls, in us.

    CPU time of this thread, not wall time: on a shared machine other
    processes stretch wall time but not the work itself.
    """
    best = float("inf")
    for _ in range(repeat):
        start = time.thread_time_ns()
        for _ in range(count):
            fn()
        best = min(best, (time.thread_time_ns() - start) / count / 1000)
    return best


def wrap_all(recipients: list[Recipient], file_key: bytes) -> list[object]:
    return [r.wrap(file_key) for r in recipients]


def header_size(ct: bytes) -> int:
    parsed = find_header_end(ct)
    assert parsed is not None
    return parsed.end


def stream_seconds(data: bytes, recipients: list[Recipient], identities: list[Identity]) -> float:
    start = time.thread_time()
    enc = EncryptingReader(BytesReader(data), recipients)
    parts = []
    while part := enc.read(1 << 20):
        parts.append(part)
    dec = DecryptingReader(BytesReader(b"".join(parts)), identities, "bench")
    while dec.read(1 << 20):
        pass
    return time.thread_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="objects per round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the best is kept")
    parser.add_argument("--mib", type=int, default=8, help="stream size for scale")
    args = parser.parse_args()
    count, repeat = args.count, args.repeat
    logging.getLogger("vkbackup").setLevel(logging.ERROR)  # the mixed row's warning, once

    import cryptography

    print(
        f"python {sys.version.split()[0]}, cryptography {cryptography.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()}"
    )
    classic = generate_identity()
    pq = generate_hybrid_identity()
    seed_text = pq.to_string()
    kinds: dict[str, tuple[list[Recipient], list[Identity]]] = {
        "X25519": ([classic.recipient()], [classic]),
        "PQ (mlkem768x25519)": ([pq.recipient()], [pq]),
        "mixed PQ + X25519": ([pq.recipient(), classic.recipient()], [pq]),
    }
    key = os.urandom(16)

    print(f"\n== per object, best mean of {repeat} x {count} (CPU microseconds)")
    print(
        f"{'recipients':22} {'wrap':>8} {'unwrap':>8} {'header enc':>11} {'header dec':>11}"
        f" {'enc+dec':>9} {'header B':>9}"
    )
    rows: dict[str, float] = {}
    for name, (recipients, identities) in kinds.items():
        stanzas = [s for r in recipients for s in r.wrap(key)]
        ident = identities[0]
        wrap = per_call_us(functools.partial(wrap_all, recipients, key), count, repeat)
        unwrap = per_call_us(functools.partial(ident.unwrap, stanzas), count, repeat)
        ct = encrypt_bytes(b"", recipients)
        enc = per_call_us(functools.partial(encrypt_bytes, b"", recipients), count, repeat)
        dec = per_call_us(functools.partial(decrypt_bytes, ct, identities), count, repeat)
        rows[name] = enc + dec
        print(
            f"{name:22} {wrap:8.1f} {unwrap:8.1f} {enc:11.1f} {dec:11.1f} {enc + dec:9.1f}"
            f" {header_size(ct):9d}"
        )
    extra = rows["PQ (mlkem768x25519)"] - rows["X25519"]
    print(f"PQ over X25519: {extra:+.1f} us per object (written once, read once)")

    load = per_call_us(lambda: parse_identity(seed_text), 200, repeat)
    print(f"loading one PQ identity (once per process): {load:.1f} us")

    data = os.urandom(args.mib << 20)
    secs = min(stream_seconds(data, [classic.recipient()], [classic]) for _ in range(3))
    per_mib = secs / args.mib * 1e6
    print(
        f"\n== for scale: encrypt + decrypt stream, X25519, {args.mib} MiB: {secs * 1e3:.0f} ms,"
        f" {per_mib:.0f} us per MiB"
    )
    print(
        f"the PQ extra per object equals streaming {extra / per_mib * 1024:.1f} KiB more; "
        f"on a 1 MiB object it is {extra / (rows['X25519'] + per_mib) * 100:.2f}% "
        "of encrypt + decrypt"
    )


if __name__ == "__main__":
    main()
