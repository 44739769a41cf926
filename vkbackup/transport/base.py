"""The transport interface: run an argv on a host, as byte streams.

Two implementations: `SshTransport` (paramiko) and `LocalTransport` (subprocess).
Everything above this layer (sources, actions) is written against `Transport`
only, so the same code path runs locally in unit tests and over SSH for real.

Commands are argv lists. For a remote pipeline use `pipeline_argv(script)`,
which runs the script with `bash -c` under `set -euo pipefail` so a failing
stage is seen. No pty is ever requested: binary output stays binary.

`run` keeps a command's output in memory, so it is capped: a host is not
trusted to print a little (a hostile or broken one could otherwise exhaust the
backup machine). Past RUN_STDOUT_LIMIT bytes of stdout the command is killed
and a TransportError names the host and the command; of stderr only the last
RUN_STDERR_KEEP bytes are kept. Anything large must be read as a stream
(`start`), which never collects.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from vkbackup.errors import RemoteCommandError, TransportError
from vkbackup.streams import Readable, iter_chunks

STDERR_TAIL_BYTES = 8192
#: the most stdout `run` (and `feed`) keep in memory; past it the command is killed
RUN_STDOUT_LIMIT = 64 * 1024 * 1024
#: how much of stderr's tail `run` keeps (a streamed command keeps STDERR_TAIL_BYTES)
RUN_STDERR_KEEP = 1024 * 1024


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
        """Return the kept tail of stderr (STDERR_TAIL_BYTES, or RUN_STDERR_KEEP
        for `run`), decoded."""
        ...

    def kill(self) -> None: ...


class CheckedStdout:
    """A started command's stdout whose end is reported only once the command
    exited 0: the read that would return EOF first waits for the exit status,
    and raises instead (RemoteCommandError with the stderr tail, TransportError
    for a lost connection) when it is not 0.

    Why: a consumer that commits at EOF (a storage put renames its temp file or
    completes its multipart upload there) must never commit the output of a
    command that failed. A tar killed midway, or an SSH channel that dropped
    (paramiko reports a plain EOF), leaves a stream that merely ends early; a
    compressor downstream would close its frame around it and the truncated
    archive would be stored as a whole one. Checked here, the put aborts.
    ``status`` is the exit status once waited for (None before)."""

    def __init__(self, proc: Process) -> None:
        self._proc = proc
        self.status: int | None = None

    def read(self, n: int = -1, /) -> bytes:
        if self.status is not None:
            return b""  # ended (wait() may have closed the stream under it)
        data = self._proc.stdout.read(n)
        if not data and n != 0:
            self.status = self._proc.wait(check=True)
        return data


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
        in memory (see run_process: capped). With *check*, raise RemoteCommandError
        if it fails; raise TransportError if the output is over RUN_STDOUT_LIMIT,
        the connection is lost, or *timeout* passes."""
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


def _size_text(n: int) -> str:
    mib = 1024 * 1024
    return f"{n // mib} MiB" if n >= mib and n % mib == 0 else f"{n} bytes"


def output_too_large(host: str, argv: list[str], limit: int) -> TransportError:
    """The error for a command whose stdout passed *limit* bytes in memory."""
    return TransportError(
        f"{host}: output over {_size_text(limit)}: {short_command(argv)}: the command "
        "was stopped; output this large must be read as a stream, not kept in memory",
        hint="a host that prints this much to a small command is broken or hostile; "
        "look at what the command prints there",
    )


def _wrap(host: str, argv: list[str], doing: str, e: BaseException) -> TransportError:
    if isinstance(e, TransportError):
        return e
    what = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return TransportError(f"{host}: {short_command(argv)}: failed while {doing}: {what}")


def run_process(
    host: str,
    argv: list[str],
    proc: Process,
    *,
    input: bytes = b"",
    check: bool = True,
    timeout: float | None = None,
) -> Completed:
    """Given a started process, feed it *input*, collect its stdout (at most
    RUN_STDOUT_LIMIT bytes) and wait: the one body of every transport's `run`.

    *input* is written by its own thread while stdout is read, so a command
    that prints before it has read all its input cannot deadlock us. A command
    that exits without reading its input is judged by its exit status, as
    subprocess.run does. With *timeout*, the command is killed once that many
    seconds have passed.

    Return the Completed command. Raise TransportError past the stdout cap
    (the command is killed first), after *timeout*, or if the connection is
    lost; with *check*, RemoteCommandError for a non-zero status.
    """
    limit = RUN_STDOUT_LIMIT
    write_error: list[TransportError] = []

    def write() -> None:
        try:
            if input:
                proc.write(input)
        except TransportError as e:
            write_error.append(e)
        except (OSError, ValueError):
            pass  # the command closed its stdin: its exit status says why
        finally:
            with contextlib.suppress(OSError, ValueError):
                proc.close_stdin()

    timed_out = threading.Event()
    timer: threading.Timer | None = None
    if timeout is not None:

        def expire() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    out: list[bytes] = []
    total = 0
    try:
        for chunk in iter_chunks(proc.stdout, 65536):
            total += len(chunk)
            if total > limit:
                raise output_too_large(host, argv, limit)
            out.append(chunk)
        status = proc.wait(check=False)
    except BaseException:
        proc.kill()
        with contextlib.suppress(TransportError):
            proc.wait(check=False)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    writer.join(timeout=10)
    if timed_out.is_set():
        raise TransportError(
            f"{host}: {short_command(argv)} did not finish within {timeout:g}s and was killed"
        )
    if check and status != 0:
        raise failure(host, argv, status, proc.stderr_tail())
    if write_error:
        raise write_error[0]
    return Completed(argv, status, b"".join(out), proc.stderr_tail())


def feed_process(host: str, argv: list[str], proc: Process, src: Readable) -> Completed:
    """Stream *src* into a started process's stdin, collect its (small) stdout, wait.

    If the process stops reading early, its exit status says why (a failure raises
    RemoteCommandError); one that exits 0 without reading everything is an error too.
    An error from *src* itself (e.g. an integrity check) kills the process and propagates.
    Its stdout is capped as run's is (RUN_STDOUT_LIMIT: over it, the process is
    killed and TransportError raised), and a failure reading it (the connection
    lost) is raised here, never lost in the reader thread.
    """
    limit = RUN_STDOUT_LIMIT
    out: list[bytes] = []
    read_error: list[BaseException] = []
    overflow = threading.Event()

    def read_all() -> None:
        total = 0
        try:
            for chunk in iter_chunks(proc.stdout, 65536):
                total += len(chunk)
                if total > limit:
                    overflow.set()
                    proc.kill()
                    return
                out.append(chunk)
        except Exception as e:  # raised in the caller's thread below
            read_error.append(e)

    reader = threading.Thread(target=read_all, daemon=True)
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
        with contextlib.suppress(TransportError):
            proc.wait(check=False)
        raise
    status = proc.wait(check=False)
    reader.join(timeout=30)
    if overflow.is_set():
        raise output_too_large(host, argv, limit)
    if status != 0:
        raise failure(host, argv, status, proc.stderr_tail())
    if read_error:
        raise _wrap(host, argv, "reading its output", read_error[0])
    if write_error is not None:
        raise TransportError(
            f"{host}: {short_command(argv)} exited before reading all of its input: {write_error}"
        )
    return Completed(argv, status, b"".join(out), proc.stderr_tail())
