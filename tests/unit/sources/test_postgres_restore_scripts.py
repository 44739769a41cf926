"""The parallel database restore's two commands, run by bash with a stand-in `docker`
(it runs `docker exec [-i] CONTAINER CMD...` as CMD here) and stand-in PostgreSQL
tools that log their arguments: the dump is spooled, checked by size, restored with
-j, and always removed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vkbackup.sources import postgres


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    log = tmp_path / "calls.log"
    scripts = {
        "docker": '[ "$1" = exec ] || exit 9; shift; [ "$1" = -i ] && shift; shift; exec "$@"',
        "dropdb": f'echo "dropdb $*" >> {log}',
        "pg_restore": f'echo "pg_restore $*" >> {log}; cat "${{@: -1}}" > {tmp_path}/restored',
    }
    for name, body in scripts.items():
        (d / name).write_text("#!/bin/bash\n" + body + "\n")
        (d / name).chmod(0o755)
    return d


def bash(script: str, bin_dir: Path, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script], input=data, env=env, capture_output=True
    )


def test_spooled_dump_is_restored_in_parallel_and_removed(bin_dir: Path, tmp_path: Path) -> None:
    path = str(tmp_path / "spool dir" / "x.pgdump")
    Path(path).parent.mkdir()
    dump = os.urandom(100_000)
    assert bash(postgres.spool_dump_script("pg", path), bin_dir, dump).returncode == 0
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    script = postgres.parallel_restore_script("pg", "postgres", "chat", 15, path, len(dump), 2)
    cp = bash(script, bin_dir)
    assert cp.returncode == 0, cp.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0] == "dropdb -U postgres --if-exists --force chat"
    assert calls[1] == f"pg_restore -U postgres -d postgres -C --exit-on-error -j 2 {path}"
    assert (tmp_path / "restored").read_bytes() == dump
    assert not os.path.exists(path)


def test_a_short_spool_is_never_restored(bin_dir: Path, tmp_path: Path) -> None:
    path = str(tmp_path / "x.pgdump")
    bash(postgres.spool_dump_script("pg", path), bin_dir, b"cut short")
    script = postgres.parallel_restore_script("pg", "postgres", "chat", 15, path, 100_000, 2)
    cp = bash(script, bin_dir)
    assert cp.returncode == 1
    assert b"has 9 bytes, 100000 were sent" in cp.stderr
    assert not (tmp_path / "calls.log").exists()  # no dropdb, no pg_restore
    assert not os.path.exists(path)
