"""`python -m tests.lab COMMAND`: the test lab from the command line.

Commands:
    up [--scale N]      bring up what is missing (idempotent); print a summary
    down                remove containers, volumes, network, S3 and state (images stay cached)
    status              JSON: what runs and answers; exit 0 when the lab is fully up
    reset-fresh         recreate the fresh host empty (same host keys); print seconds
    reset-prod [--scale N]  recreate and reseed prod
    check-down          exit 1 and list what a `down` left behind (containers, volumes,
                        networks, processes, ports, state)
    env                 print shell exports (VKBACKUP_CONFIG, VKBACKUP_LAB_DIR)
"""

from __future__ import annotations

import argparse
import json
import sys

from tests.lab import lab
from tests.lab.paths import lab_paths
from tests.lab.sh import LabError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.lab", description="vkbackup test lab")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="bring the lab up (idempotent)")
    p_up.add_argument("--scale", type=float, default=None, help="database/volume size (1 = ~30 MB)")
    p_up.add_argument("--json", action="store_true", help="print the state as JSON")
    sub.add_parser("down", help="tear the lab down")
    sub.add_parser("status", help="JSON status")
    sub.add_parser("reset-fresh", help="recreate the fresh host empty")
    p_rp = sub.add_parser("reset-prod", help="recreate and reseed prod")
    p_rp.add_argument("--scale", type=float, default=None)
    sub.add_parser("check-down", help="verify `down` left nothing behind")
    sub.add_parser("env", help="print shell exports for the lab config")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "up":
            state = lab.up(args.scale)
            print(json.dumps(state, indent=2) if args.json else lab.summary(state))
        elif args.cmd == "reset-prod":
            print(lab.summary(lab.reset_prod(args.scale)))
        elif args.cmd == "down":
            lab.down()
        elif args.cmd == "status":
            doc = lab.status()
            print(json.dumps(doc, indent=2))
            return 0 if doc.get("up") else 1
        elif args.cmd == "reset-fresh":
            print(f"fresh host reset in {lab.reset_fresh():.1f}s")
        elif args.cmd == "check-down":
            left = lab.check_down()
            for item in left:
                print(f"left behind: {item}")
            if left:
                return 1
            print("down is clean: no lab containers, volumes, networks, processes or state")
        elif args.cmd == "env":
            paths = lab_paths()
            print(f"export VKBACKUP_LAB_DIR={paths.root}")
            print(f"export VKBACKUP_CONFIG={paths.config}")
    except LabError as e:
        print(f"lab: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
