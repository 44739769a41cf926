"""Benchmark: where the peak memory of an upload to S3 goes, stage by stage.

Usage (as root, the lab's SeaweedFS up; see tests/lab/README.md):
    .venv/bin/python benchmarks/s3_memory.py [--uploads 2] [--mib 200] [--part-mib 8]

Each measurement is a NEW Python process (peak RSS only grows, so stages must not
share one): it imports what `vkbackup snapshot` imports, builds the S3 client
from the lab's S3 config, then runs *--uploads* concurrent `S3Storage.put` calls
of *--mib* MiB each (incompressible bytes from a 1 MiB block, no SSH, no
encryption), and reports its peak RSS (getrusage ru_maxrss) after each stage:
    python                the interpreter alone
    + vkbackup CLI        `import vkbackup.cli.main` (paramiko, cryptography, click)
    + boto3               `import boto3`
    + S3 client           one request made (botocore loads the S3 service model)
    + N uploads           the puts, each a multipart upload with two part buffers
The objects are deleted afterwards. Prints one line per stage; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, resource, sys, threading
from pathlib import Path
sys.path.insert(0, sys.argv[1])
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {"python": peak()}
import vkbackup.cli.main  # noqa: F401
out["+ vkbackup CLI"] = peak()
import boto3  # noqa: F401
out["+ boto3"] = peak()
from dataclasses import replace
from vkbackup.config.load import load_config
from vkbackup.storage.s3 import S3Storage
cfg = load_config(Path(sys.argv[2]))
part = int(sys.argv[5]) * 1024 * 1024
st = S3Storage.from_config(replace(cfg.storage, prefix="vkbench-s3mem"))
st.part_size = part
st.head("none")
out["+ S3 client"] = peak()
block = os.urandom(1 << 20)
class Source:
    def __init__(self, n):
        self.left = n
    def read(self, k=-1):
        if self.left <= 0:
            return b""
        k = min(k if k > 0 else 1 << 20, self.left, 1 << 20)
        self.left -= k
        return block[:k]
n, size = int(sys.argv[3]), int(sys.argv[4]) << 20
def put(i):
    st.put(f"obj{i}", Source(size), size_hint=size)
threads = [threading.Thread(target=put, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
out[f"+ {n} uploads"] = peak()
for i in range(n):
    st.delete(f"obj{i}")
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--uploads", type=int, default=2, help="concurrent uploads")
    parser.add_argument("--mib", type=int, default=200, help="MiB per upload")
    parser.add_argument("--part-mib", type=int, default=8, help="part size in MiB")
    parser.add_argument("--config", default=str(REPO / ".lab" / "vkbackup-s3.toml"))
    args = parser.parse_args()
    cp = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO), args.config, str(args.uploads),
         str(args.mib), str(args.part_mib)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if cp.returncode != 0:
        sys.exit(f"measurement failed:\n{cp.stderr[-2000:]}")
    stages: dict[str, float] = json.loads(cp.stdout)
    before = 0.0
    for name, mib in stages.items():
        print(f"{name:18} peak RSS {mib:6.1f} MiB  (+{mib - before:5.1f})")
        before = mib


if __name__ == "__main__":
    main()
