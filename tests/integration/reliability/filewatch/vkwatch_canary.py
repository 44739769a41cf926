"""Test-only: the file watch's canary (tests/integration/reliability/test_secrets_watch.py).

Run under the watch (`python -m vkwatch_canary`, this directory on PYTHONPATH,
VKWATCH_DIR set) with a JSON object on standard input: route -> text. It hides
each text by its route, in $TMPDIR or the working directory, and cleans up
after itself the way a careless program would; the test then asserts that its
scan finds every text by the route named, so a watch gone blind cannot pass:

    remove      written, then os.remove                      (copied before the remove)
    rename      written to a .part, os.replace'd onto a final name, then a clean
                file os.replace'd over that final name       (copied before both renames)
    rmtree      in a file two levels down a tree, shutil.rmtree   (walked before)
    truncate    written, then reopened with "w" and rewritten clean  (copied before)
    ftruncate   written, then os.ftruncate(fd, 0)            (copied before)
    unlinked    a file opened, unlinked, THEN written        (its held inode, at exit)
    kept        written and left in place                    (copied at exit)
    child       written by a shell child, left in place      (only the before/after scan)
    stderr      printed on standard error                    (the output scan)
    anonymous   written to tempfile.TemporaryFile (O_TMPFILE): nobody can see it; the
                watch logs that such a file was made, which the test expects here and
                refuses in vkbackup's runs
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    texts: dict[str, str] = json.load(sys.stdin)
    tmp = Path(os.environ["TMPDIR"])
    cwd = Path.cwd()

    gone = tmp / "canary-remove.txt"
    gone.write_text(texts["remove"])
    os.remove(gone)

    part, final, clean = cwd / "canary.part", cwd / "canary.final", cwd / "canary.clean"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(texts["rename"])
    os.replace(part, final)
    clean.write_text("nothing here\n")
    os.replace(clean, final)

    tree = tmp / "canary-tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "blob").write_text(texts["rmtree"])
    shutil.rmtree(tree)

    trunc = tmp / "canary-truncate.txt"
    trunc.write_text(texts["truncate"])
    trunc.write_text("nothing here\n")

    ftrunc = tmp / "canary-ftruncate.txt"
    ftrunc.write_text(texts["ftruncate"])
    with open(ftrunc, "r+") as f:
        os.ftruncate(f.fileno(), 0)

    unlinked = tmp / "canary-unlinked.txt"
    with open(unlinked, "w") as f:
        os.unlink(unlinked)
        f.write(texts["unlinked"])

    (cwd / "canary-kept.txt").write_text(texts["kept"])

    subprocess.run(
        ["sh", "-c", 'printf %s "$1" > "$2"', "sh", texts["child"], str(tmp / "canary-child.txt")],
        check=True,
    )

    with tempfile.TemporaryFile() as anon:
        anon.write(texts["anonymous"].encode())

    sys.stderr.write(texts["stderr"] + "\n")


if __name__ == "__main__":
    main()
