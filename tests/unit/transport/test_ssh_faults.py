"""A cut SSH connection never escapes as a raw paramiko or socket exception.

Where a cut lands decides how paramiko fails: EOFError from its packet writer
(even inside `recv`, which sends window adjusts), OSError (socket.error),
SSHException ("Key-exchange timed out ..." among them), or a channel that just
ends with no exit status. These tests drive `SshTransport` over a fake paramiko
transport and channel that fail in each of those ways at each channel
operation, and at many byte offsets of a stream, and assert every time a
TransportError that names the host and the command. No network: the cut is
deterministic, not left to the timing of a real one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from vkbackup.errors import ConfigError, TransportError
from vkbackup.streams import BytesReader, iter_chunks
from vkbackup.transport import base
from vkbackup.transport import ssh as ssh_module
from vkbackup.transport.ssh import SshTransport, check_key_file_mode

HOST = "root@prod.example:22"
ARGV = ["cat", "/srv/data/blob.bin"]
CMD = "cat /srv/data/blob.bin"

EXCEPTIONS: dict[str, Callable[[], BaseException]] = {
    "EOFError": EOFError,
    "socket.error": lambda: OSError("Socket is closed"),
    "ConnectionResetError": lambda: ConnectionResetError(104, "Connection reset by peer"),
    "BrokenPipeError": lambda: BrokenPipeError(32, "Broken pipe"),
    "SSHException": lambda: paramiko.SSHException("Channel closed."),
    "kex-timeout": lambda: paramiko.SSHException(
        "Key-exchange timed out waiting for key negotiation"
    ),
}

OPERATIONS = [
    "open_session",
    "settimeout",
    "exec_command",
    "sendall",
    "recv",
    "recv_stderr",
    "shutdown_write",
    "recv_exit_status",
    "close",
]


class FakeChannel:
    """A paramiko Channel whose connection is cut at one operation, or once
    *cut_recv_at* stdout bytes were received, or *cut_send_at* stdin bytes sent.

    After the cut it behaves as paramiko does on a dead transport: the failing
    operation raises, reads end (b""), and there is no exit status (-1).
    """

    def __init__(
        self,
        conn: FakeSsh,
        *,
        fail_op: str | None = None,
        exc: Callable[[], BaseException] = EOFError,
        stdout: bytes = b"hello\n",
        stderr: bytes = b"some warning\n",
        cut_recv_at: int | None = None,
        cut_send_at: int | None = None,
    ) -> None:
        self.conn = conn
        self.fail_op = fail_op
        self.exc = exc
        self._out = memoryview(stdout)
        self._err = memoryview(stderr)
        self.cut_recv_at = cut_recv_at
        self.cut_send_at = cut_send_at
        self.received = 0
        self.sent = 0
        self.closed = False
        self.lock = threading.Lock()

    def _maybe_fail(self, op: str) -> None:
        if op == self.fail_op:
            self.conn.cut = True
            raise self.exc()

    def settimeout(self, timeout: float | None) -> None:
        self._maybe_fail("settimeout")

    def exec_command(self, command: str) -> None:
        self._maybe_fail("exec_command")
        assert command == CMD

    def recv(self, n: int) -> bytes:
        self._maybe_fail("recv")
        with self.lock:
            if self.conn.cut or self.closed:
                return b""
            n = min(n, 65536, len(self._out))
            if self.cut_recv_at is not None and self.received + n > self.cut_recv_at:
                n = self.cut_recv_at - self.received
                if n == 0:  # the window adjust for what came before hits the cut
                    self.conn.cut = True
                    raise self.exc()
            data = bytes(self._out[:n])
            self._out = self._out[n:]
            self.received += n
            return data

    def recv_stderr(self, n: int) -> bytes:
        self._maybe_fail("recv_stderr")
        with self.lock:
            if self.conn.cut or self.closed:
                return b""
            data = bytes(self._err[:n])
            self._err = self._err[len(data) :]
            return data

    def sendall(self, data: bytes) -> None:
        self._maybe_fail("sendall")
        if self.conn.cut:
            raise OSError("Socket is closed")
        if self.cut_send_at is not None and self.sent + len(data) > self.cut_send_at:
            self.sent = self.cut_send_at
            self.conn.cut = True
            raise self.exc()
        self.sent += len(data)

    def shutdown_write(self) -> None:
        self._maybe_fail("shutdown_write")

    def recv_exit_status(self) -> int:
        self._maybe_fail("recv_exit_status")
        return -1 if self.conn.cut else 0

    def close(self) -> None:
        self.closed = True
        self._maybe_fail("close")


class FakeSsh:
    """A paramiko Transport that hands out one FakeChannel per session."""

    def __init__(self, **channel: Any) -> None:
        self.channel_args = channel
        self.cut = False
        self.channels: list[FakeChannel] = []
        self.close_raises: BaseException | None = None
        self.saved_exception: BaseException | None = None
        self.still_active = False  # as paramiko, for a moment after the cut

    def open_session(self, timeout: float | None = None) -> FakeChannel:
        if self.channel_args.get("fail_op") == "open_session":
            self.cut = True
            raise self.channel_args.get("exc", EOFError)()
        chan = FakeChannel(self, **self.channel_args)
        self.channels.append(chan)
        return chan

    def is_active(self) -> bool:
        return self.still_active or not self.cut

    def close(self) -> None:
        self.cut = True
        if self.close_raises is not None:
            raise self.close_raises


def transport(**channel: Any) -> SshTransport:
    return SshTransport(FakeSsh(**channel), HOST, 5.0)  # type: ignore[arg-type]


def fake(t: SshTransport) -> FakeSsh:
    f: object = t._t
    assert isinstance(f, FakeSsh)
    return f


@pytest.fixture(autouse=True)
def no_thread_escapes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BaseException]]:
    """Fail a test whose background thread (stderr drain, feed reader) died raising."""
    seen: list[BaseException] = []

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            seen.append(args.exc_value)

    monkeypatch.setattr(threading, "excepthook", hook)
    yield seen
    assert seen == [], f"exceptions escaped in threads: {seen!r}"


def assert_names_host_and_command(e: TransportError) -> None:
    assert HOST in str(e), str(e)
    assert CMD in str(e), str(e)


def run_start(t: SshTransport) -> None:
    proc = t.start(ARGV)
    for _ in iter_chunks(proc.stdout):
        pass
    proc.wait(check=False)


def run_run(t: SshTransport) -> None:
    t.run(ARGV, input=b"some input", check=False)


def run_feed(t: SshTransport) -> None:
    t.feed(ARGV, BytesReader(b"x" * 200_000))


ENTRY_POINTS: dict[str, Callable[[SshTransport], None]] = {
    "start": run_start,
    "run": run_run,
    "feed": run_feed,
}


# start() writes nothing, so sendall is covered by run and feed only
CASES = [
    (op, entry)
    for op in OPERATIONS
    for entry in ENTRY_POINTS
    if (op, entry) != ("sendall", "start")
]


@pytest.mark.parametrize("exc_name", sorted(EXCEPTIONS))
@pytest.mark.parametrize(("op", "entry"), CASES)
def test_every_failure_at_every_channel_operation_is_a_transport_error(
    op: str, entry: str, exc_name: str
) -> None:
    t = transport(fail_op=op, exc=EXCEPTIONS[exc_name])
    with pytest.raises(TransportError) as raised:
        ENTRY_POINTS[entry](t)
    assert_names_host_and_command(raised.value)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_a_healthy_channel_still_works(entry: str) -> None:
    ENTRY_POINTS[entry](transport())
    res = transport().run(ARGV)
    assert res.status == 0 and res.stdout == b"hello\n" and res.stderr == "some warning\n"


STREAM = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB
OFFSETS = [
    0,
    1,
    100,
    4095,
    4096,
    32767,
    32768,
    65535,
    65536,
    65537,
    100_000,
    262_144,
    500_000,
    1024 * 1024 - 1,
    1024 * 1024,
    1_500_000,
    2 * 1024 * 1024,
    2_500_000,
    3 * 1024 * 1024 - 65536,
    3 * 1024 * 1024 - 1,
]


@pytest.mark.parametrize("exc_name", ["EOFError", "socket.error", "kex-timeout"])
@pytest.mark.parametrize("offset", OFFSETS)
def test_stdout_cut_at_any_offset(offset: int, exc_name: str) -> None:
    """The cut lands on the window adjust of a `recv` after *offset* bytes."""
    t = transport(stdout=STREAM, cut_recv_at=offset, exc=EXCEPTIONS[exc_name])
    proc = t.start(ARGV)
    got = 0
    with pytest.raises(TransportError) as raised:
        for chunk in iter_chunks(proc.stdout):
            got += len(chunk)
        proc.wait(check=False)
    assert got == offset
    assert_names_host_and_command(raised.value)
    assert "connection lost" in str(raised.value)


@pytest.mark.parametrize("exc_name", ["EOFError", "socket.error", "kex-timeout"])
@pytest.mark.parametrize("offset", OFFSETS)
def test_stdin_cut_at_any_offset(offset: int, exc_name: str) -> None:
    t = transport(cut_send_at=offset, exc=EXCEPTIONS[exc_name])
    with pytest.raises(TransportError) as raised:
        t.feed(ARGV, BytesReader(STREAM))
    assert_names_host_and_command(raised.value)


def test_a_channel_that_ends_with_no_status_on_a_dead_connection_is_lost_even_unchecked() -> None:
    """The quiet cut: paramiko closes the channel, reads end, status -1."""
    t = transport()
    proc = t.start(ARGV)
    assert b"".join(iter_chunks(proc.stdout)) == b"hello\n"
    fake(t).cut = True
    with pytest.raises(TransportError, match="connection lost while waiting") as raised:
        proc.wait(check=False)
    assert_names_host_and_command(raised.value)


def test_a_channel_closed_before_paramiko_marks_the_connection_inactive_is_lost() -> None:
    """paramiko's transport thread saves the exception that killed the
    connection, closes its channels, and only then clears is_active()."""
    t = transport()
    proc = t.start(ARGV)
    b"".join(iter_chunks(proc.stdout))
    fake(t).cut = True
    fake(t).still_active = True
    fake(t).saved_exception = EOFError()
    with pytest.raises(TransportError, match="connection lost while waiting"):
        proc.wait(check=False)


def test_a_status_of_minus_one_on_a_live_connection_is_the_command_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sshd sends exit-signal, not exit-status, for a killed command: -1, no cut."""
    t = transport()
    proc = t.start(ARGV)
    b"".join(iter_chunks(proc.stdout))
    monkeypatch.setattr(fake(t).channels[0], "recv_exit_status", lambda: -1)
    assert proc.wait(check=False) == -1


def test_no_data_within_the_timeout_names_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    t = transport(fail_op="recv", exc=TimeoutError)
    with pytest.raises(TransportError, match=r"no data for 7s") as raised:
        t.run(ARGV, timeout=7)
    assert_names_host_and_command(raised.value)


def test_cleanup_after_kill_keeps_the_error_already_on_its_way() -> None:
    """snapshot's upload: `except BaseException: kill(); wait(check=False); raise`.
    The cleanup must not replace the error (a raw EOFError did, once)."""
    t = transport(fail_op="close", exc=EOFError)
    proc = t.start(ARGV)
    fake(t).cut = True
    with pytest.raises(RuntimeError, match="the storage failed"):
        try:
            raise RuntimeError("the storage failed")
        except BaseException:
            proc.kill()
            assert proc.wait(check=False) == -1
            raise
    with pytest.raises(TransportError):  # a checked wait still says it failed
        proc.wait(check=True)


def test_kill_and_close_swallow_a_dead_connection() -> None:
    """Cleanup runs while another error is on its way: it must not replace it."""
    t = transport(fail_op="close", exc=EOFError)
    t.start(ARGV).kill()
    fake(t).close_raises = EOFError()
    t.close()


def test_run_output_over_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "RUN_STDOUT_LIMIT", 100_000)
    t = transport(stdout=STREAM)
    with pytest.raises(TransportError, match="output over 100000 bytes") as raised:
        t.run(ARGV)
    assert_names_host_and_command(raised.value)
    assert "stream" in str(raised.value)
    assert fake(t).channels[0].closed


# -- key files --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o660, 0o601])
def test_ssh_key_readable_by_others_is_refused_with_the_chmod(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "id ed25519"
    key.write_text("not read: refused before\n")
    key.chmod(mode)
    with pytest.raises(ConfigError) as raised:
        ssh_module._load_private_key(key, None)
    assert f"{key}: SSH key file is readable by group or others (mode {mode:04o})" in str(
        raised.value
    )
    assert raised.value.hint == f"chmod 600 '{key}'"


def test_ssh_key_with_mode_600_passes_the_check(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("x")
    key.chmod(0o600)
    check_key_file_mode(key)
    check_key_file_mode(tmp_path / "missing")  # the loader says "not found"
