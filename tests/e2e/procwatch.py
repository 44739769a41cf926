"""Act on a process on a lab host at a byte count it has reached, not at a guessed time.

`Watcher(lab, host, field, limit, signal, *pgrep_args)` runs a small bash loop on
*host* over SSH. It prints "watching" as soon as it runs (`ready()` waits for that, so
a test starts the action under watch only once the watcher is in place), waits for
the newest process that `pgrep PGREP_ARGS` names, then reads one counter of its
/proc/PID/io (`rchar`: bytes it has read, `wchar`: bytes it has written) with shell
builtins only, microseconds a round, and sends it *signal* (STOP, KILL, ...) the
moment the counter reaches *limit*. `result()` returns (pid, the counter's value when
it was signalled). Processes of containers are processes of the host (Docker in
Docker), so this reaches into containers too. Everything is bounded: the loop gives
up after `seconds`.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from tests.lab.api import Lab

SCRIPT = r"""
field=$1; limit=$2; sig=$3; end=$((SECONDS + $4)); shift 4
echo watching
pid=
while [ -z "$pid" ] && [ $SECONDS -lt $end ]; do pid=$(pgrep -n "$@"); done
[ -n "$pid" ] || { echo "no process: $*"; exit 1; }
while [ -r /proc/$pid/io ] && [ $SECONDS -lt $end ]; do
  v=
  while IFS=': ' read -r k n; do [ "$k" = "$field" ] && { v=$n; break; }; done < /proc/$pid/io
  if [ -n "$v" ] && [ "$v" -ge "$limit" ]; then kill -"$sig" "$pid"; echo "$pid $v"; exit 0; fi
done
echo "process $pid ended before its $field reached $limit"; exit 1
"""


class Watcher:
    def __init__(
        self,
        lab: Lab,
        host: str,
        field: str,
        limit: int,
        signal: str,
        *pgrep: str,
        seconds: int = 300,
    ) -> None:
        args = shlex.join([field, str(limit), signal, str(seconds), *pgrep])
        self.proc = subprocess.Popen(
            [*lab.ssh_argv(host), f"bash -c {shlex.quote(SCRIPT)} watcher {args}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.seconds = seconds
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def ready(self, timeout: float = 60) -> None:
        """Wait until the watcher runs on the host."""
        deadline = time.monotonic() + timeout
        while "watching" not in self.lines:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                pytest.fail(f"the watcher did not start: {self.lines}")
            time.sleep(0.05)

    def result(self, alive: Callable[[], bool] = lambda: True) -> tuple[int, int]:
        """Wait until the watcher has signalled its process; return (pid, value). Fail
        if *alive* turns false first (the watched work ended before the point)."""
        deadline = time.monotonic() + self.seconds + 30
        while self.thread.is_alive():
            assert alive(), f"the work ended before the watcher's point: {self.lines}"
            assert time.monotonic() < deadline, f"the watcher never finished: {self.lines}"
            self.thread.join(0.1)
        self.proc.wait(30)
        last = self.lines[-1] if self.lines else ""
        parts = last.split()
        if self.proc.returncode != 0 or len(parts) != 2 or not all(p.isdigit() for p in parts):
            pytest.fail(f"the watcher did not reach its point: {self.lines}")
        return int(parts[0]), int(parts[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
