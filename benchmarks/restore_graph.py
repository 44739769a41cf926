"""Benchmark: the lab restore's RTO with the plan run one step at a time, and with
up to 2 and 3 steps at a time (the runner's STEP_PARALLEL), alternating, in one run.

Usage (as root, the lab up; see tests/lab/README.md):
    .venv/bin/python benchmarks/restore_graph.py [--parallel 1,2,3] [--rounds 2]

Each round takes, for each parallelism in turn: `reset-fresh` (a bare Debian host:
no Docker, no Caddy, no UFW), then the restore of prod's latest snapshot in the
lab's local storage, exactly as `vkbackup restore latest --host prod --to fresh
--playbook restore-playbooks/visualkit.toml --yes --json` runs it, in this process
with `vkbackup.restore.runner.STEP_PARALLEL` set first (the one thing changed).
A snapshot is taken first if prod has none. Rounds alternate the settings so a
busy moment of this shared machine does not land on one setting only.

Prints, per run, the RTO and the critical path (walking back from the last step
to end through the step that ended last before each one started), and per
setting the median RTO. Writes benchmarks/results/<stamp>-restore-graph.json. A
harness: it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from run import critical_path  # noqa: E402  (benchmarks/run.py, beside this file)

from tests.lab.api import get_lab  # noqa: E402
from vkbackup.cli.main import main as vkbackup_main  # noqa: E402
from vkbackup.restore import runner  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
PLAYBOOK = REPO / "restore-playbooks" / "visualkit.toml"


def restore_once(config: Path, parallel: int) -> dict[str, Any]:
    """One restore onto the reset fresh host with STEP_PARALLEL = *parallel*."""
    runner.STEP_PARALLEL = parallel
    out = io.StringIO()
    argv = ["--config", str(config), "restore", "latest", "--host", "prod", "--to", "fresh",
            "--playbook", str(PLAYBOOK), "--yes", "--json"]  # fmt: skip
    code = 0
    with contextlib.redirect_stdout(out):
        try:
            vkbackup_main(argv)
        except SystemExit as e:
            code = int(e.code or 0)
    doc: dict[str, Any] = json.loads(out.getvalue())
    doc["exit"] = code
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--parallel", default="1,2,3", help="settings of STEP_PARALLEL")
    parser.add_argument("--rounds", type=int, default=2, help="runs per setting")
    args = parser.parse_args()
    settings = [int(x) for x in args.parallel.split(",") if x]
    lab = get_lab()
    if not json.loads(lab.vkbackup("list", "--host", "prod", "--json").stdout or "[]"):
        lab.vkbackup("snapshot", "prod")
    runs: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for p in settings:
            lab.reset_fresh()
            t0 = time.monotonic()
            doc = restore_once(lab.config_path, p)
            wall = time.monotonic() - t0
            timeline = [[x["id"], x.get("started", 0.0), x["seconds"]] for x in doc["steps"]]
            path = critical_path(timeline)
            runs.append({"parallel": p, "round": r, "rto": doc["rto_seconds"], "wall": wall,
                         "status": doc["status"], "exit": doc["exit"], "steps": doc["steps"],
                         "critical_path": path})  # fmt: skip
            print(f"parallel {p} round {r}: RTO {doc['rto_seconds']:.1f}s ({doc['status']})")
            print("  critical path: " + " -> ".join(path))
    print()
    for p in settings:
        rtos = [x["rto"] for x in runs if x["parallel"] == p and x["status"] == "ok"]
        if rtos:
            print(f"STEP_PARALLEL={p}: median RTO {statistics.median(rtos):.1f}s of {rtos}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"{stamp}-restore-graph.json"
    out.write_text(json.dumps({"runs": runs}, indent=1))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
