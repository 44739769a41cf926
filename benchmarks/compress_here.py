"""Benchmark: a snapshot's data path for one tar stream, by where it is compressed.

Usage (no lab needed; this machine plays host and backup machine):
    .venv/bin/python benchmarks/compress_here.py [--size 1G] [--workers 0,2] [--dir DIR]

Builds a tree of --size bytes (half random, half text, like a volume of attachments
and logs), then takes it the way `vkbackup snapshot` does, each variant in a new
process: `bash -c 'tar -cf - . [| host compressor]'` through the LocalTransport ->
[ZstdCompressingReader here] -> sha256 -> age (EncryptingReader) -> sha256 ->
discarded. Variants:
    host-none        tar only (the floor: reading and encrypting the bytes)
    host-gzip        tar | gzip -1 -c   (snapshot.compression "auto" on a host without
                                         zstd before issue 18; "gzip" now)
    host-zstd        tar | zstd -q -T0 -3 -c   (a host with zstd)
    here-zstd-wN     tar, then zstd level 3 here with N libzstd workers (N=0: on the
                     reading thread, what vkbackup does)
Prints wall seconds, MB/s of tar bytes, CPU seconds (this process / its children:
tar and the host compressor), this process's peak RSS and the output size.
Both "sides" share this machine's cores, so a variant's wall time is bounded by its
total CPU; on the lab, benchmarks/nozstd.py measures the real thing.
This is a harness, not a test: it prints numbers and asserts nothing.
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

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from vkbackup.crypto import EncryptingReader, generate_identity  # noqa: E402
from vkbackup.sources.base import compress_stage  # noqa: E402
from vkbackup.streams import CHUNK, HashingReader, Readable  # noqa: E402
from vkbackup.transport.base import pipeline_argv  # noqa: E402
from vkbackup.transport.local import LocalTransport  # noqa: E402
from vkbackup.zstd_compress import ZstdCompressingReader  # noqa: E402

MIB = 1 << 20


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def build_tree(root: Path, size: int) -> None:
    """Files of 8 MiB: half of the bytes random, half log-like text."""
    root.mkdir(parents=True, exist_ok=True)
    piece = 8 * MIB
    line = b"%08d 2026-11-30T03:00:%02d GET /api/v1/accounts/%d/conversations 200 %dms\n"
    text = b"".join(line % (i, i % 60, i % 97, i % 503) for i in range(piece // 64))[:piece]
    n = max(2, size // piece)
    for i in range(n):
        data = os.urandom(piece) if i % 2 == 0 else text
        (root / f"f{i:05d}.bin").write_bytes(data)


def one(variant: str, tree: Path) -> dict[str, object]:
    """Run one variant in this process and return its numbers."""
    host = variant.removeprefix("host-") if variant.startswith("host-") else "none"
    script = f"tar -C {tree} -cf - ." + compress_stage(host)
    proc = LocalTransport().start(pipeline_argv(script))
    counted = HashingReader(proc.stdout)  # the bytes that crossed from the "host"
    out: Readable = counted
    if variant.startswith("here-zstd-w"):
        out = ZstdCompressingReader(counted, workers=int(variant.rsplit("w", 1)[1]))
    plain = HashingReader(out)
    cipher = HashingReader(EncryptingReader(plain, [generate_identity().recipient()]))
    t0 = time.perf_counter()
    while cipher.read(CHUNK):
        pass
    proc.wait(check=True)
    wall = time.perf_counter() - t0
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "variant": variant,
        "wall": wall,
        "cpu_here": me.ru_utime + me.ru_stime,
        "cpu_host": kids.ru_utime + kids.ru_stime,
        "rss_mib": me.ru_maxrss / 1024,
        "link_bytes": counted.size,
        "stored_bytes": cipher.size,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--workers", default="0,2", help="libzstd worker counts to try here")
    ap.add_argument("--dir", help="where to build the tree (default: a temporary dir)")
    ap.add_argument("--variants", help="comma-separated subset of the variants")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # a child: VARIANT
    args = ap.parse_args()
    if args.one:
        assert args.dir
        print(json.dumps(one(args.one, Path(args.dir))))
        return
    size = parse_size(args.size)
    variants = ["host-none", "host-gzip", "host-zstd"]
    variants += [f"here-zstd-w{int(w)}" for w in args.workers.split(",") if w.strip()]
    if args.variants:
        variants = [v.strip() for v in args.variants.split(",")]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tree = Path(tmp) / "tree"
        build_tree(tree, size)
        tar_bytes = sum(f.stat().st_size for f in tree.iterdir())
        subprocess.run(["tar", "-C", str(tree), "-cf", "/dev/null", "."], check=True)  # warm
        print(f"tree: {tar_bytes / 1e6:.0f} MB in {tree}, {os.cpu_count()} cores")
        print(
            f"{'variant':14} {'wall s':>7} {'MB/s':>6} {'cpu here':>8} {'cpu host':>8} "
            f"{'rss MiB':>7} {'link MB':>8} {'stored MB':>9}"
        )
        for v in variants:
            res = subprocess.run(
                [sys.executable, __file__, "--one", v, "--dir", str(tree)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(res.stdout)
            print(
                f"{v:14} {r['wall']:7.2f} {tar_bytes / 1e6 / r['wall']:6.0f} "
                f"{r['cpu_here']:8.2f} {r['cpu_host']:8.2f} {r['rss_mib']:7.0f} "
                f"{r['link_bytes'] / 1e6:8.0f} {r['stored_bytes'] / 1e6:9.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
