"""`run` keeps a command's output in memory, so a host may not print without
bound: past RUN_STDOUT_LIMIT the command is killed and a TransportError names
the host and the command; only stderr's last RUN_STDERR_KEEP bytes are kept.
Streams (`start`) are not capped. Exercised with the local transport, the same
`run_process` body the SSH transport uses, with the cap lowered."""

from __future__ import annotations

import time

import pytest

from vkbackup.errors import RemoteCommandError, TransportError
from vkbackup.streams import BytesReader, iter_chunks
from vkbackup.transport import LocalTransport, base

CAP = 64 * 1024


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(base, "RUN_STDOUT_LIMIT", CAP)
    return CAP


def test_the_default_cap_is_64_mib() -> None:
    assert base.RUN_STDOUT_LIMIT == 64 * 1024 * 1024
    assert base.RUN_STDERR_KEEP == 1024 * 1024


def test_output_over_the_cap_is_refused_naming_host_and_command(small_cap: int) -> None:
    t = LocalTransport("prod")
    argv = ["head", "-c", str(small_cap + 1), "/dev/zero"]
    with pytest.raises(TransportError) as raised:
        t.run(argv)
    msg = str(raised.value)
    assert msg.startswith("prod: output over 65536 bytes: head -c 65537 /dev/zero"), msg
    assert "stream" in msg
    assert not isinstance(raised.value, RemoteCommandError)


def test_output_at_the_cap_is_kept(small_cap: int) -> None:
    res = LocalTransport("prod").run(["head", "-c", str(small_cap), "/dev/zero"])
    assert res.stdout == b"\0" * small_cap


def test_endless_output_is_stopped(small_cap: int) -> None:
    """`yes` never ends: the cap must kill it, not wait for it."""
    started = time.monotonic()
    with pytest.raises(TransportError, match="output over"):
        LocalTransport("prod").run(["yes", "hostile"], check=False)
    assert time.monotonic() - started < 10


def test_the_cap_holds_without_check(small_cap: int) -> None:
    with pytest.raises(TransportError, match="output over"):
        LocalTransport().run(["bash", "-c", "head -c 200000 /dev/zero; exit 3"], check=False)


def test_a_stream_is_not_capped(small_cap: int) -> None:
    proc = LocalTransport().start(["head", "-c", str(small_cap * 4), "/dev/zero"])
    assert sum(len(c) for c in iter_chunks(proc.stdout)) == small_cap * 4
    assert proc.wait() == 0


def test_feed_stdout_is_capped_too(small_cap: int) -> None:
    argv = ["bash", "-c", "cat >/dev/null; head -c 300000 /dev/zero"]
    with pytest.raises(TransportError, match="prod: output over 65536 bytes: bash -c"):
        LocalTransport("prod").feed(argv, BytesReader(b"x" * 100_000))


def test_feed_input_is_not_capped(small_cap: int) -> None:
    res = LocalTransport().feed(["wc", "-c"], BytesReader(b"x" * (small_cap * 8)))
    assert res.stdout.strip() == str(small_cap * 8).encode()


def test_stderr_keeps_only_its_tail() -> None:
    script = "head -c 3000000 /dev/zero | tr '\\0' a >&2; echo THE-END >&2"
    res = LocalTransport().run(["bash", "-c", script])
    assert len(res.stderr) <= base.RUN_STDERR_KEEP
    assert len(res.stderr) > base.STDERR_TAIL_BYTES
    assert res.stderr.endswith("THE-END\n")


def test_input_and_output_larger_than_a_pipe_do_not_deadlock() -> None:
    """The command prints 1 MB before reading its 1 MB of input."""
    script = "head -c 1000000 /dev/zero; wc -c >&2"
    res = LocalTransport().run(["bash", "-c", script], input=b"y" * 1_000_000)
    assert len(res.stdout) == 1_000_000
    assert res.stderr.strip() == "1000000"


def test_input_not_read_is_judged_by_the_status() -> None:
    assert LocalTransport().run(["true"], input=b"z" * 1_000_000).status == 0
    with pytest.raises(RemoteCommandError, match="exited with status 4"):
        LocalTransport().run(["bash", "-c", "exit 4"], input=b"z" * 1_000_000)


def test_timeout_is_a_transport_error() -> None:
    with pytest.raises(TransportError, match=r"prod: sleep 30 did not finish within 0.5s"):
        LocalTransport("prod").run(["sleep", "30"], timeout=0.5)


def test_a_missing_program_is_a_transport_error() -> None:
    with pytest.raises(TransportError, match="prod: cannot start no-such-program-vk"):
        LocalTransport("prod").run(["no-such-program-vk"])
