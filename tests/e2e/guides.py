"""The break-glass guides' shell blocks, as their e2e tests follow them literally:
every ```sh block in order, the one marked `variables` kept apart so a test can put
the lab's values in its place (```sh-s3 and other blocks are not run)."""

from __future__ import annotations

import re
from pathlib import Path

PLAYBOOKS = Path(__file__).resolve().parents[2] / "restore-playbooks"
FENCE = re.compile(r"^```(\S*)([^\n]*)\n(.*?)^```", re.M | re.S)


def guide_blocks(guide: Path) -> tuple[str, list[str]]:
    """Return (the variables block, the other `sh` blocks in order) of *guide*."""
    variables = ""
    blocks: list[str] = []
    for lang, info, body in FENCE.findall(guide.read_text()):
        if lang != "sh":
            continue
        if "variables" in info:
            variables = body
        else:
            blocks.append(body)
    return variables, blocks
