"""Benchmark: `vkbackup snapshot` of a lab host without zstd, beside the same host with
zstd, gzip on the host (what "auto" did there before issue 18), restic and OpenSSH+age,
in one run.

Usage (as root, the lab up; see tests/lab/README.md):
    .venv/bin/python benchmarks/nozstd.py [--sizes 1G[,4G]] [--repeat 1] [--s3]
        [--skip restic,age,gzip] [--no-reseed] [--keep-scale] [--workdir DIR]

How a host without zstd is made (run.py's zstd_hidden, also behind run.py's own
vk-nozstd row): prod's `zstd` binary is renamed for the runs that need it
(`mv /usr/bin/zstd /usr/bin/zstd.vkbench-hidden`), as tests/e2e/test_incremental.py
does on fresh, and put back afterwards whatever happens (also at start, should an
earlier run have died with it hidden). So prod really has
no zstd: the facts script's `command -v zstd` finds none, and any command that ran
zstd there would fail. Nothing in vkbackup is changed or patched for it.

For each size (prod reseeded as benchmarks/run.py does; --no-reseed: as it is):
    vk-zstd-host   vkbackup snapshot, prod with zstd (tars compressed on prod)
    vk-nozstd      the same, zstd hidden: tars compressed here (compressed_on "here")
    vk-nozstd-s3   the same to SeaweedFS (with --s3)
    vk-gzip-host   zstd hidden, snapshot.compression = "gzip": gzip -1 on prod
    restic         ssh | restic backup --stdin of the three streams (as run.py)
    ssh+age        ssh | age -r of the three streams (as run.py)
each into new empty storage (a full snapshot). Prints wall seconds, MB/s of source
bytes, throughput vs restic and vs ssh+age (issue 18's targets: >= 1.0x and >= 0.6x),
peak RSS, stored MB, CPU here and on prod, and where each source was compressed (from
the snapshot's --json). Writes benchmarks/results/<stamp>-nozstd.json. At the end prod
is put back to scale 1 (--keep-scale to leave it). A harness: it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from run import (  # noqa: E402  (benchmarks/run.py, beside this file)
    RESULTS,
    Bench,
    Measure,
    Sources,
    best,
    log,
    mb,
    parse_size,
    put_back,
    scale_for,
    tree_bytes,
    zstd_hidden,
)

TARGETS = {"vs_restic": 1.0, "vs_age": 0.6}


def with_compression(config: Path, value: str) -> None:
    text = config.read_text()
    assert "[snapshot]\n" in text, "the lab config has no [snapshot] table"
    config.write_text(text.replace("[snapshot]\n", f'[snapshot]\ncompression = "{value}"\n', 1))


def snapshot(bench: Bench, name: str, tag: str, *, s3: bool, compression: str = "") -> Measure:
    config, where = bench.config(tag, s3=s3)
    if compression:
        with_compression(config, compression)
    m, out = bench.run(f"{name} {tag}", bench.vk(config, "snapshot", "prod", "--json"))
    doc = json.loads(out)
    m.name = name
    m.extra.update(
        status=doc["status"],
        bytes_new=doc["bytes_new"],
        sources={s["name"]: s["seconds"] for s in doc["sources"]},
        compressed_on={s["name"]: s.get("compressed_on") for s in doc["sources"]},
    )
    m.extra["stored"] = bench.s3_bytes(where, delete=True) if s3 else tree_bytes(Path(where))
    if not s3:
        shutil.rmtree(where, ignore_errors=True)
    return m


def one_size(bench: Bench, args: argparse.Namespace, label: str) -> dict[str, Any]:
    scale = scale_for(parse_size(label))
    log(f"== size {label}: scale {scale}")
    if not args.no_reseed and abs(bench.lab.scale - scale) > 1e-9:
        bench.lab_cmd("reset-prod", "--scale", str(scale))
    src = Sources.from_config(bench.lab.config_path)
    facts = bench.facts(src)
    log(f"data {mb(facts['data_bytes']):.0f} MB, source streams {facts['stream_bytes']}")
    skip = bench.skip
    runs: dict[str, list[Measure]] = {}
    for rep in range(args.repeat):
        tag = f"{label}-{rep}"
        runs.setdefault("vk-zstd-host", []).append(
            snapshot(bench, "vk-zstd-host", f"{tag}-zh", s3=False)
        )
        with zstd_hidden(bench):
            runs.setdefault("vk-nozstd", []).append(snapshot(bench, "vk-nozstd", tag, s3=False))
            if args.s3:
                runs.setdefault("vk-nozstd-s3", []).append(
                    snapshot(bench, "vk-nozstd-s3", tag, s3=True)
                )
            if "gzip" not in skip:
                runs.setdefault("vk-gzip-host", []).append(
                    snapshot(bench, "vk-gzip-host", f"{tag}-gz", s3=False, compression="gzip")
                )
        if "restic" not in skip:
            r1, _ = bench.restic(src, tag)
            runs.setdefault("restic", []).append(r1)
            shutil.rmtree(bench.work / "restic" / tag, ignore_errors=True)
        if "age" not in skip:
            runs.setdefault("ssh+age", []).append(bench.age(src, tag))
    results = {k: best(v) for k, v in runs.items()}
    doc = {"label": label, "facts": facts, "runs": {k: asdict(v) for k, v in results.items()}}
    print_table(doc, results)
    return doc


def print_table(doc: dict[str, Any], results: dict[str, Measure]) -> None:
    source = float(doc["facts"]["source_bytes"])
    restic = results.get("restic")
    age = results.get("ssh+age")
    print(f"\n== {doc['label']}: source streams {mb(source):.0f} MB (prod without zstd)")
    print(
        f"{'run':14} {'wall s':>7} {'MB/s':>6} {'vs restic':>9} {'vs age':>7} {'rss MiB':>7} "
        f"{'stored MB':>9} {'cpu here':>8} {'cpu prod':>8}  compressed on"
    )
    for name, m in results.items():
        vs_r = f"{restic.wall / m.wall:.2f}x" if restic else "-"
        vs_a = f"{age.wall / m.wall:.2f}x" if age else "-"
        where = sorted({v for v in m.extra.get("compressed_on", {}).values() if v})
        print(
            f"{name:14} {m.wall:7.1f} {mb(source) / m.wall:6.0f} {vs_r:>9} {vs_a:>7} "
            f"{m.max_rss_kib / 1024:7.0f} {mb(float(m.extra.get('stored', 0))):9.0f} "
            f"{m.cpu:8.1f} {m.host_cpu:8.1f}  {','.join(where) or '-'}"
        )
    print(
        f"targets (issue 18): vk-nozstd >= {TARGETS['vs_restic']}x restic and "
        f">= {TARGETS['vs_age']}x ssh+age throughput\n",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="1G", help="database + volumes sizes")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (best kept)")
    parser.add_argument("--skip", default="", help="comma list of: restic, age, gzip")
    parser.add_argument("--s3", action="store_true", help="also vk-nozstd to SeaweedFS")
    parser.add_argument("--workdir", default=None, help="scratch space (default: a temp dir)")
    parser.add_argument("--no-reseed", action="store_true", help="use prod as it is (one size)")
    parser.add_argument("--keep-scale", action="store_true", help="leave prod at the last scale")
    parser.add_argument("--quiet-below", type=float, default=0.25)
    parser.add_argument("--quiet-wait", type=float, default=180)
    args = parser.parse_args()
    args.vk_env, args.vkbackup_src, args.profile = [], "", False  # what Bench reads

    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": ".venv/bin/python benchmarks/nozstd.py " + " ".join(sys.argv[1:]),
        "sizes": [],
    }
    out_json = RESULTS / f"{stamp}-nozstd.json"
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.workdir:
            work = Path(args.workdir) / f"vkbench-nozstd-{stamp}"
            work.mkdir(parents=True)
            stack.callback(shutil.rmtree, work, True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vkbench-")))
        bench = Bench(args, work, stamp)
        put_back(bench)
        try:
            for label in [s.strip() for s in args.sizes.split(",") if s.strip()]:
                doc["sizes"].append(one_size(bench, args, label))
                doc["seconds"] = time.monotonic() - t0
                out_json.write_text(json.dumps(doc, indent=1))
        finally:
            put_back(bench)
            if not args.keep_scale and not args.no_reseed:
                with contextlib.suppress(subprocess.CalledProcessError):
                    bench.lab_cmd("reset-prod", "--scale", "1")
    log(f"results: {out_json}")


if __name__ == "__main__":
    main()
