"""The transport interface: run an argv on a host, as byte streams.

Two implementations: `SshTransport` (paramiko) and `LocalTransport` (subprocess).
Everything above this layer (sources, actions) is written against `Transport`
only, so the same code path runs locally in unit tests and over SSH for real.

Commands are argv lists. For a remote pipeline use `pipeline_argv(script)`,
which runs the script with `bash -c` under `set -euo pipefail` so a failing
stage is seen. No pty is ever requested: binary output stays binary.
"""

from __future__ import annotations

import shlex
import threading
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from vkbackup.errors import RemoteCommandError, TransportError
from vkbackup.streams import Readable, iter_chunks

STDERR_TAIL_BYTES = 8192


def pipeline_argv(script: str) -> list[str]:
    """Given a bash script (a pipeline), return the argv that runs it with pipefail."""
    return ["bash", "-c", "set -euo pipefail\n" + script]


def command_string(argv: list[str]) -> str:
    """Given an argv, return the one shell-quoted string SSH exec needs."""
    return shlex.join(argv)


class StderrTail:
    """Keeps the last STDERR_TAIL_BYTES of a stream of stderr chunks (thread-safe append)."""

    def __init__(self, limit: int = STDERR_TAIL_BYTES) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit

    def add(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        while self._size - len(self._chunks[0]) >= self._limit and len(self._chunks) > 1:
            self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        data = b"".join(self._chunks)[-self._limit :]
        return data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    status: int
    stdout: bytes
    stderr: str


class Process(Protocol):
    """A started command; its stderr is drained concurrently into a tail."""

    @property
    def stdout(self) -> Readable:
        """The command's stdout as a stream (bytes, never decoded)."""
        ...

    def write(self, data: bytes) -> None: ...

    def close_stdin(self) -> None: ...

    def wait(self, check: bool = True) -> int:
        """Close stdin, wait for the command and return its exit status. With
        *check*, raise RemoteCommandError with the stderr tail for any non-zero
        status (a command killed by a signal included)."""
        ...

    def stderr_tail(self) -> str:
        """Return the last STDERR_TAIL_BYTES of stderr, decoded."""
        ...

    def kill(self) -> None: ...


class Transport(Protocol):
    @property
    def name(self) -> str:
        """Where commands run, for errors: "root@203.0.113.7:22" or "local"."""
        ...

    def start(self, argv: list[str]) -> Process:
        """Start *argv* and return it; read its stdout as a stream."""
        ...

    def run(
        self,
        argv: list[str],
        *,
        input: bytes = b"",
        check: bool = True,
        timeout: float | None = None,
    ) -> Completed:
        """Run a small command with *input* on stdin and return its output, collected
        in memory. With *check*, raise RemoteCommandError if it fails."""
        ...

    def feed(self, argv: list[str], src: Readable) -> Completed:
        """Stream *src* into *argv*'s stdin, then wait (see feed_process)."""
        ...

    def close(self) -> None: ...


def short_command(argv: list[str], limit: int = 160) -> str:
    """A one-line, bounded rendering of argv for messages (scripts are long)."""
    if len(argv) >= 3 and argv[0] == "bash" and argv[1] == "-c":
        body = [ln.strip() for ln in argv[2].splitlines() if ln.strip()]
        body = [ln for ln in body if ln != "set -euo pipefail"]
        cmd = "bash -c '" + "; ".join(body) + "'"
    else:
        cmd = command_string(argv)
    return cmd if len(cmd) <= limit else cmd[:limit] + " ..."


def describe_status(status: int) -> str:
    """Given an exit status (negative: killed by that signal; -1: none), say what happened."""
    if status == -1:
        return "was killed by a signal or the connection dropped (no exit status)"
    if status < 0:
        return f"was killed by signal {-status}"
    return f"exited with status {status}"


def failure(host: str, argv: list[str], status: int, tail: str) -> RemoteCommandError:
    """Build the error for a failed command: host, command, status, stderr tail."""
    cmd = short_command(argv)
    tail = tail.strip()
    msg = f"{host}: command {describe_status(status)}: {cmd}"
    if tail:
        msg += "\n  stderr (last lines):\n    " + "\n    ".join(tail.splitlines()[-15:])
    return RemoteCommandError(msg, host=host, argv=argv, exit_status=status, stderr_tail=tail)


def feed_process(host: str, argv: list[str], proc: Process, src: Readable) -> Completed:
    """Stream *src* into a started process's stdin, collect its (small) stdout, wait.

    If the process stops reading early, its exit status says why (a failure raises
    RemoteCommandError); one that exits 0 without reading everything is an error too.
    An error from *src* itself (e.g. an integrity check) kills the process and propagates.
    """
    out: list[bytes] = []
    reader = threading.Thread(
        target=lambda: out.extend(iter_chunks(proc.stdout, 65536)), daemon=True
    )
    reader.start()
    write_error: Exception | None = None
    try:
        for chunk in iter_chunks(src):
            try:
                proc.write(chunk)
            except (BrokenPipeError, TransportError) as e:
                write_error = e
                break
    except BaseException:
        proc.kill()
        proc.wait(check=False)
        raise
    status = proc.wait(check=True)
    reader.join(timeout=30)
    if write_error is not None:
        raise TransportError(
            f"{host}: {short_command(argv)} exited before reading all of its input: {write_error}"
        )
    return Completed(argv, status, b"".join(out), proc.stderr_tail())
