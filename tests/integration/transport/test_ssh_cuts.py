"""A real SSH connection cut at many byte offsets always ends in a TransportError.

Where a cut lands decides how paramiko fails (EOFError from its packet writer
while `recv` sends a window adjust, a socket error, SSHException, or a channel
that just ends with no exit status), so one cut proves little: a CI run once
let a raw EOFError escape from exactly one such place. The TCP proxy resets
the connection after a given number of bytes, downstream while a command's
stdout streams, upstream while stdin is fed, at 20 offsets from 0 to 4 MiB.
Each time: a TransportError naming the host and the command, never a raw
exception, and nothing hangs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.tcpproxy import TcpProxy
from tests.integration.transport.conftest import Sshd
from vkbackup.errors import TransportError
from vkbackup.streams import BytesReader, iter_chunks
from vkbackup.transport.ssh import SshTransport, connect

MIB = 1024 * 1024
SIZE = 5 * MIB  # every offset below lands inside the stream
OFFSETS = [
    0,
    1,
    48,
    512,
    4096,
    16_383,
    32_768,
    65_536,
    131_072,
    262_144,
    500_000,
    MIB - 1,
    MIB,
    MIB + 32_769,
    3 * MIB // 2,
    2 * MIB,
    5 * MIB // 2,
    3 * MIB,
    7 * MIB // 2,
    4 * MIB,
]
assert len(OFFSETS) == 20


@pytest.fixture
def no_thread_escapes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A background thread (stderr drain, feed reader) must not die raising."""
    seen: list[BaseException] = []

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            seen.append(args.exc_value)

    monkeypatch.setattr(threading, "excepthook", hook)
    yield
    assert seen == [], f"exceptions escaped in threads: {seen!r}"


def through_proxy(sshd: Sshd, proxy: TcpProxy, tmp_path: Path) -> SshTransport:
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{proxy.port} {sshd.host_pub}\n")
    return connect(sshd.host(port=proxy.port, known_hosts=kh))


def read_stream(t: SshTransport) -> None:
    proc = t.start(["head", "-c", str(SIZE), "/dev/zero"])
    for _ in iter_chunks(proc.stdout):
        pass
    proc.wait(check=False)  # not even an unchecked wait may pass a cut


def run_small(t: SshTransport) -> None:
    t.run(["head", "-c", str(SIZE), "/dev/zero"], check=False)


def feed_stream(t: SshTransport) -> None:
    t.feed(["cat"], BytesReader(b"\x5a" * SIZE))  # cat: its stdout streams back too


def feed_sink(t: SshTransport) -> None:
    t.feed(["sh", "-c", "cat >/dev/null"], BytesReader(b"\x5a" * SIZE))


CASES: dict[str, tuple[str, Callable[[SshTransport], None], str]] = {
    "stdout-stream": ("down", read_stream, "head -c"),
    "run-output": ("down", run_small, "head -c"),
    "feed-echo": ("down", feed_stream, "cat"),
    "feed-stdin": ("up", feed_sink, "cat >/dev/null"),
}


@pytest.mark.usefixtures("no_thread_escapes")
@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_cut_at_any_offset_is_a_transport_error(
    sshd: Sshd, tmp_path: Path, case: str, offset: int
) -> None:
    way, action, command = CASES[case]
    with TcpProxy(sshd.port) as proxy:
        t = through_proxy(sshd, proxy, tmp_path)
        try:
            if way == "down":
                proxy.cut_after(down=offset)
            else:
                proxy.cut_after(up=offset)
            with pytest.raises(TransportError) as raised:
                action(t)
            assert proxy.cuts == 1
            msg = str(raised.value)
            assert t.name in msg, msg
            assert command in msg, msg
        finally:
            t.close()
        # the proxy cut once: a new connection through it works
        again = through_proxy(sshd, proxy, tmp_path)
        try:
            assert again.run(["echo", "ok"]).stdout == b"ok\n"
        finally:
            again.close()


@pytest.mark.parametrize("offset", [0, 200, 1500])  # the handshake sends < 3000 bytes down
def test_a_cut_during_the_handshake_is_a_transport_error(
    sshd: Sshd, tmp_path: Path, offset: int
) -> None:
    with TcpProxy(sshd.port) as proxy:
        proxy.cut_after(down=offset)
        with pytest.raises(TransportError, match=f"127.0.0.1:{proxy.port}"):
            through_proxy(sshd, proxy, tmp_path)
