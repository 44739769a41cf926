"""Benchmark: what each stage of a snapshot's host-side pipeline costs on the lab's prod.

Usage (as root, the lab up at the scale to measure; see tests/lab/README.md):
    .venv/bin/python benchmarks/host_stages.py [STAGE ...]     (default: every stage)

Runs each stage once on prod over OpenSSH, output piped into `wc -c` on prod
(nothing crosses the link but the byte count), and prints its wall time, the
CPU seconds prod spent on it (from the lab host's cgroups: "host" = sshd, tar,
gzip/zstd, the docker CLI and dockerd; "ctr" = the containers, e.g. pg_dump
running in the PostgreSQL container) and its output size. The stages are the
ones vkbackup's sources run (tar of the attachments volume, `docker save` of
the configured images, `pg_dump -Fc`) with each compressor choice, plus the
small commands around them (stopping and starting the volume's users, the
volume tree fingerprint, `du`). Run it once before measuring to warm prod's
page cache. This is a harness, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from run import Probe, Sources  # noqa: E402  (benchmarks/run.py, beside this file)

from tests.lab.api import get_lab  # noqa: E402


def stages(src: Sources, volume: str, mountpoint: str, stop: list[str]) -> dict[str, str]:
    """Stage name -> shell command run on prod (its stdout is counted)."""
    tar = f"cd {mountpoint} && tar -cf - --numeric-owner -S -p ."
    save = src.docker_save()
    stopped = " ".join(stop)
    return {
        "tar": tar,
        "tar|gzip-1": f"{tar} | gzip -1 -c",
        "tar|zstd-1": f"{tar} | zstd -q -1 -c",
        "tar|zstd-3-T0": f"{tar} | zstd -q -3 -T0 -c",
        "save": save,
        "save|gzip-1": f"{save} | gzip -1 -c",
        "save|zstd-1": f"{save} | zstd -q -1 -c",
        "save|zstd-3-T0": f"{save} | zstd -q -3 -T0 -c",
        "pg_dump-Z0": src.pg_dump(0),
        "pg_dump-Z1": src.pg_dump(1),
        "pg_dump-Z0|zstd-1": f"{src.pg_dump(0)} | zstd -q -1 -c",
        "pg_dump-default": src.pg_dump(None),
        f"stop+start {stopped}": f"docker stop -t 60 {stopped} >/dev/null && "
        f"docker start {stopped} >/dev/null",
        "tree-fingerprint": f"cd {mountpoint} && find . -printf "
        "'%y %m %U %G %s %T@ %C@ %i %n %l %p\\0' | sort -z | sha256sum",
        "du -sb": f"du -sb {mountpoint}",
    }


def main() -> None:
    lab = get_lab(bring_up=False)
    probe = Probe(lab)
    src = Sources.from_config(lab.config_path)
    volume = "chatwoot_storage_data"
    mountpoint = lab.ssh("prod", f"docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}")
    stop = ["chatwoot-chatwoot-1", "chatwoot-chatwoot-sidekiq-1"]
    todo = stages(src, volume, mountpoint.stdout.strip(), stop)
    wanted = sys.argv[1:] or list(todo)
    print(f"lab scale {lab.scale}; CPU seconds on prod from its cgroups")
    print(f"{'stage':34} {'wall s':>7} {'host s':>7} {'ctr s':>6} {'out MB':>8}")
    for name in wanted:
        cmd = todo[name]
        before = probe.read()
        start = time.perf_counter()
        out = lab.ssh("prod", f"set -o pipefail; {cmd} | wc -c", timeout=3600).stdout.strip()
        wall = time.perf_counter() - start
        after = probe.read()
        host = after.get("prod.host", 0.0) - before.get("prod.host", 0.0)
        ctr = after.get("prod.ctr", 0.0) - before.get("prod.ctr", 0.0)
        size = int(out.split()[-1]) / 1e6 if out else 0.0
        print(f"{name:34} {wall:7.2f} {host:7.2f} {ctr:6.2f} {size:8.1f}", flush=True)


if __name__ == "__main__":
    main()
