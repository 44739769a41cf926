"""Benchmark: the tree `vkbackup ls` computes from a GNU --listed-incremental chain.

Usage:
    .venv/bin/python benchmarks/tartree_bench.py [--files 55000] [--dirs 5000]
                                                 [--repeat 1] [--tmpdir DIR]

What it does:
  1. Makes --files small files spread over --dirs directories (two deep:
     dNNNN/sNN when there are over 100 directories) in a temporary directory
     and takes a real GNU tar full (level 0) with --listed-incremental.
  2. Changes it (every 50th file rewritten, every 97th deleted, a file added in
     every 10th directory, one directory renamed) and takes the incremental
     (level 1): GNU tar writes a dumpdir for every directory, changed or not,
     so level 1 holds as many dumpdirs as there are directories.
  3. Times what `vkbackup ls SNAPSHOT SOURCE` does once the objects are
     plaintext: vkbackup.restore.tartree.build over level 0 alone, then over
     levels 0 and 1, then the listing of the whole tree (Tree.below("")), and
     the headers-only part of `dump` of the whole tree (tar_stream over the
     directories and symlinks, no content). Storage, age and decompression are
     left out: they are measured by the other benchmarks.

Each step is timed --repeat times and the best run is kept (the machine may be
shared). This is a harness, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vkbackup.restore.tartree import DIR, LevelTar, Tree, build, open_tar, tar_stream


def dir_names(dirs: int) -> list[str]:
    """*dirs* directory paths, two deep past 100 (as a volume's tree is)."""
    if dirs <= 100:
        return [f"d{i:04d}" for i in range(dirs)]
    tops = max(1, dirs // 50)
    return [f"d{i % tops:04d}/s{i // tops:03d}" for i in range(dirs)]


def make_tree(root: Path, files: int, dirs: int) -> list[Path]:
    """Given an empty *root*, fill it with *files* files over *dirs* directories."""
    paths = [root / d for d in dir_names(dirs)]
    for p in paths:
        p.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (paths[i % dirs] / f"f{i:06d}").write_bytes(b"%d\n" % i)
    return paths


def change_tree(paths: list[Path], files: int, dirs: int) -> None:
    """Level 1's changes: rewrite, delete, add, rename."""
    for i in range(0, files, 50):
        (paths[i % dirs] / f"f{i:06d}").write_bytes(b"changed %d\n" % i)
    for i in range(7, files, 97):
        (paths[i % dirs] / f"f{i:06d}").unlink(missing_ok=True)
    for j in range(0, dirs, 10):
        (paths[j] / "added").write_bytes(b"new\n")
    paths[-1].rename(paths[-1].with_name(paths[-1].name + "-renamed"))


def gnu_tar(src: Path, snar: Path, out: Path) -> None:
    subprocess.run(
        ["tar", "-cf", str(out), "--numeric-owner", f"--listed-incremental={snar}", "."],
        cwd=src,
        check=True,
    )


def tree_of(levels: list[Path]) -> Tree:
    handles = [p.open("rb") for p in levels]
    try:
        return build(((i, open_tar(f)) for i, f in enumerate(handles)), "bench")
    finally:
        for f in handles:
            f.close()


def no_level(level: int) -> LevelTar:
    raise AssertionError(f"directories only: level {level} is never opened")


def best(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    times: list[float] = []
    out: object = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=55_000)
    ap.add_argument("--dirs", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tmpdir", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tartree-bench-", dir=args.tmpdir) as tmp:
        work = Path(tmp)
        src, snar = work / "src", work / "state.snar"
        src.mkdir()
        t0 = time.perf_counter()
        paths = make_tree(src, args.files, args.dirs)
        levels = [work / "level0.tar", work / "level1.tar"]
        gnu_tar(src, snar, levels[0])
        time.sleep(1.1)  # level 1's changes get a later mtime than level 0's start
        change_tree(paths, args.files, args.dirs)
        gnu_tar(src, snar, levels[1])
        setup = time.perf_counter() - t0
        sizes = ", ".join(
            f"level {i} {os.path.getsize(p) / 1e6:.1f} MB" for i, p in enumerate(levels)
        )
        print(f"setup (files and GNU tar, untimed below): {setup:.1f}s; {sizes}")

        t_full, tree0 = best(args.repeat, lambda: tree_of(levels[:1]))
        assert isinstance(tree0, Tree)
        print(f"build level 0:           {t_full:8.3f}s  ({len(tree0.entries)} entries)")
        t_chain, tree = best(args.repeat, lambda: tree_of(levels))
        assert isinstance(tree, Tree)
        print(f"build levels 0+1:        {t_chain:8.3f}s  ({len(tree.entries)} entries)")
        t_ls, listed = best(args.repeat, lambda: tree.below(""))
        assert isinstance(listed, list)
        print(f"list the whole tree:     {t_ls:8.3f}s  ({len(listed)} entries)")
        dirs_only = [e for e in listed if e.type == DIR]
        t_hdr, n = best(args.repeat, lambda: sum(len(c) for c in tar_stream(dirs_only, no_level)))
        print(f"tar headers of its dirs: {t_hdr:8.3f}s  ({n} bytes)")
        print(f"ls total (0+1 + list):   {t_chain + t_ls:8.3f}s")


if __name__ == "__main__":
    main()
