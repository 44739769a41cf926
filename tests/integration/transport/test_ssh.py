"""SshTransport against a real OpenSSH server on loopback."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.transport.conftest import Sshd
from vkbackup.errors import HostKeyError, RemoteCommandError, TransportError
from vkbackup.streams import BytesReader, iter_chunks
from vkbackup.transport import pipeline_argv
from vkbackup.transport.ssh import connect, fetch_host_key, fingerprint


def test_streams_binary_exactly(sshd: Sshd, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17) + bytes(range(256)) + b"\r\n\x00\x1b"
    f = tmp_path / "blob"
    f.write_bytes(data)
    t = connect(sshd.host())
    try:
        assert t.cipher == "aes128-gcm@openssh.com"
        proc = t.start(["cat", str(f)])
        got = b"".join(iter_chunks(proc.stdout))
        assert proc.wait() == 0
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    finally:
        t.close()


def test_feed_streams_into_stdin(sshd: Sshd) -> None:
    data = os.urandom(2 * 1024 * 1024)
    t = connect(sshd.host())
    try:
        res = t.feed(["sha256sum"], BytesReader(data))
        assert res.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    finally:
        t.close()


def test_failure_names_host_status_and_stderr(sshd: Sshd) -> None:
    t = connect(sshd.host())
    try:
        with pytest.raises(RemoteCommandError) as exc:
            t.run(["bash", "-c", "echo boom-on-stderr >&2; exit 7"])
        e = exc.value
        assert e.exit_status == 7
        assert f"127.0.0.1:{sshd.port}" in str(e)
        assert "exited with status 7" in str(e)
        assert "boom-on-stderr" in str(e)
    finally:
        t.close()


def test_pipefail_catches_a_failing_stage(sshd: Sshd) -> None:
    t = connect(sshd.host())
    try:
        assert t.run(["bash", "-c", "false | cat"], check=False).status == 0  # the trap
        with pytest.raises(RemoteCommandError):
            t.run(pipeline_argv("false | cat"))
    finally:
        t.close()


def test_signal_killed_process_is_a_failure(sshd: Sshd) -> None:
    t = connect(sshd.host())
    try:
        proc = t.start(["bash", "-c", "head -c 100000 /dev/zero; kill -9 $$"])
        b"".join(iter_chunks(proc.stdout))
        with pytest.raises(RemoteCommandError) as exc:
            proc.wait()
        assert exc.value.exit_status is not None and exc.value.exit_status != 0
    finally:
        t.close()


def test_unknown_host_refused_with_fingerprint(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    key = fetch_host_key("127.0.0.1", sshd.port)
    with pytest.raises(HostKeyError) as exc:
        connect(sshd.host(known_hosts=empty))
    assert fingerprint(key) in str(exc.value)
    assert "not in" in str(exc.value)


def test_changed_host_key_refused_showing_both_fingerprints(sshd: Sshd, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = (tmp_path / "other.pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    fake_fp = subprocess.run(
        ["ssh-keygen", "-lf", str(tmp_path / "other.pub")], capture_output=True, text=True
    ).stdout.split()[1]
    real_fp = fingerprint(fetch_host_key("127.0.0.1", sshd.port))
    with pytest.raises(HostKeyError) as exc:
        connect(sshd.host(known_hosts=kh))
    msg = str(exc.value)
    assert "HOST KEY CHANGED" in msg
    assert fake_fp in msg and real_fp in msg


def test_fingerprint_matches_openssh(sshd: Sshd) -> None:
    ours = fingerprint(fetch_host_key("127.0.0.1", sshd.port))
    theirs = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd.dir / "host_ed25519.pub")], capture_output=True, text=True
    ).stdout.split()[1]
    assert ours == theirs


def test_wrong_client_key_refused(sshd: Sshd, tmp_path: Path) -> None:
    k = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)], check=True)
    with pytest.raises(TransportError, match="refused every key"):
        connect(sshd.host(key_file=k))


def test_passphrase_protected_key(sshd: Sshd, tmp_path: Path) -> None:
    k = tmp_path / "k"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret-pass", "-f", str(k)], check=True
    )
    with open(sshd.dir / "authorized_keys", "a") as f:
        f.write((tmp_path / "k.pub").read_text())
    with pytest.raises(TransportError, match="passphrase-protected"):
        connect(sshd.host(key_file=k))
    t = connect(
        sshd.host(key_file=k, key_passphrase_env="VK_TEST_PASS"),
        env={"VK_TEST_PASS": "s3cret-pass"},
    )
    assert t.run(["echo", "hi"]).stdout == b"hi\n"
    t.close()


def test_connection_refused_names_address() -> None:
    from vkbackup.config.model import HostConfig

    with pytest.raises(TransportError, match=r"127\.0\.0\.1:1: cannot connect"):
        connect(HostConfig(name="x", address="127.0.0.1", port=1))


@pytest.mark.slow
def test_512_mib_stream_crosses_paramiko_rekey_threshold(sshd: Sshd) -> None:
    """Regression for paramiko #822: a stream of exactly 2^29 bytes, then the channel closes."""
    size = 512 * 1024 * 1024
    t = connect(sshd.host())
    try:
        proc = t.start(["head", "-c", str(size), "/dev/zero"])
        total = 0
        for chunk in iter_chunks(proc.stdout):
            total += len(chunk)
        assert proc.wait() == 0
        assert total == size
        # the connection is still usable afterwards
        assert t.run(["echo", "ok"]).stdout == b"ok\n"
    finally:
        t.close()
