"""`LocalTransport`: the Transport interface over subprocess on this machine.

Used by unit tests (the same code path as SSH) and for a host named "local".
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from typing import IO

from vkbackup.errors import TransportError
from vkbackup.streams import CHUNK, Readable
from vkbackup.transport.base import (
    RUN_STDERR_KEEP,
    STDERR_TAIL_BYTES,
    Completed,
    StderrTail,
    failure,
    feed_process,
    run_process,
    short_command,
)


class _Stdout:
    def __init__(self, f: IO[bytes]) -> None:
        self._f = f

    def read(self, n: int = -1, /) -> bytes:
        # read1: return what is available (up to n) without waiting to fill n
        return self._f.read1(n if n and n > 0 else CHUNK)  # type: ignore[attr-defined,no-any-return]


class LocalProcess:
    def __init__(self, host: str, argv: list[str], *, stderr_keep: int = STDERR_TAIL_BYTES) -> None:
        self._host = host
        self._argv = argv
        # its own process group, so kill() reaches a pipeline's every stage
        try:
            self._p = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            raise TransportError(
                f"{host}: cannot start {short_command(argv)}: {e.strerror or e}"
            ) from None
        assert self._p.stdout and self._p.stderr and self._p.stdin
        self._stdout = _Stdout(self._p.stdout)
        self._tail = StderrTail(stderr_keep)
        self._t = threading.Thread(target=self._drain, daemon=True)
        self._t.start()

    def _drain(self) -> None:
        assert self._p.stderr
        for chunk in iter(lambda: self._p.stderr.read1(65536), b""):  # type: ignore[union-attr,attr-defined]
            self._tail.add(chunk)

    @property
    def stdout(self) -> Readable:
        return self._stdout

    def write(self, data: bytes) -> None:
        assert self._p.stdin
        self._p.stdin.write(data)

    def close_stdin(self) -> None:
        if self._p.stdin and not self._p.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._p.stdin.close()

    def wait(self, check: bool = True) -> int:
        self.close_stdin()
        status = self._p.wait()
        self._t.join(timeout=10)
        if self._p.stdout:
            self._p.stdout.close()
        if check and status != 0:
            raise failure(self._host, self._argv, status, self._tail.text())
        return status

    def stderr_tail(self) -> str:
        return self._tail.text()

    def kill(self) -> None:
        # Kill the whole group: killing only `bash -c 'tar | gzip'` would leave tar
        # and gzip blocked on a pipe nobody reads, holding stderr open (wait() then
        # stalled 10 s on the stderr thread; found by the disk-full reliability test).
        if self._p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._p.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self._p.kill()


class LocalTransport:
    def __init__(self, name: str = "local") -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def start(self, argv: list[str]) -> LocalProcess:
        return LocalProcess(self._name, argv)

    def run(
        self,
        argv: list[str],
        *,
        input: bytes = b"",
        check: bool = True,
        timeout: float | None = None,
    ) -> Completed:
        proc = LocalProcess(self._name, argv, stderr_keep=RUN_STDERR_KEEP)
        return run_process(self._name, argv, proc, input=input, check=check, timeout=timeout)

    def feed(self, argv: list[str], src: Readable) -> Completed:
        return feed_process(self._name, argv, self.start(argv), src)

    def close(self) -> None:
        return None
