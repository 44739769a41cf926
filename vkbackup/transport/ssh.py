"""`SshTransport`: the Transport interface over one paramiko SSH connection.

The host key is checked STRICTLY against the configured known_hosts (never
auto-added); `fetch_host_key` is the one way to see an unknown key, for
`vkbackup init`'s trust-on-first-use prompt.

Choices, each for a measured reason (../shared/LAB-FACTS.md):
- aes128-gcm@openssh.com is preferred (paramiko otherwise picks aes128-ctr,
  which is slower here).
- Reads are 1 MiB `recv` calls; stderr is drained by its own thread.
- paramiko rekeys after 2^29 bytes, and a rekey racing with the remote
  closing the channel stalls or fails (paramiko #822). We raise paramiko's
  rekey thresholds to 2^36 bytes/packets, which is what OpenSSH itself uses
  for 128-bit block ciphers (its RekeyLimit default), so our client never
  starts a rekey in the middle of a stream; a server-initiated rekey is
  still handled by paramiko.
- No pty is requested, ever.

A connection can be cut at any byte, and paramiko then fails in several ways
depending on where the cut lands: EOFError from its packet writer (even inside
a `recv`, which sends window adjusts), OSError, SSHException ("Key-exchange
timed out ..." among them), or a channel that simply ends with no exit
status. Every channel operation here (open, exec, send, recv of stdout and
stderr, exit status, close) turns each of those into a TransportError naming
the host and the command, so nothing above this layer sees a paramiko or
socket exception. Only `kill` and `close` swallow them: they are cleanup, run
while another error is already on its way up.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shlex
import socket
import stat
import threading
from collections.abc import Mapping
from pathlib import Path

import paramiko

from vkbackup.config.model import HostConfig
from vkbackup.errors import ConfigError, HostKeyError, TransportError
from vkbackup.logs import get_logger, register_secret
from vkbackup.streams import CHUNK, Readable
from vkbackup.transport.base import (
    RUN_STDERR_KEEP,
    STDERR_TAIL_BYTES,
    Completed,
    StderrTail,
    command_string,
    failure,
    feed_process,
    run_process,
    short_command,
)

log = get_logger("transport.ssh")

PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
WINDOW_SIZE = 8 * 1024 * 1024
MAX_PACKET = 32768
REKEY_LIMIT = 2**36
IO_TIMEOUT = 600.0

#: every way paramiko reports a connection that is gone (socket.error is OSError,
#: and socket.timeout, TimeoutError, is one too)
LOST = (EOFError, OSError, paramiko.SSHException)


def _describe(e: BaseException | None) -> str:
    """An exception as text even when its message is empty (EOFError())."""
    if e is None:
        return "the channel ended with no exit status"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def fingerprint(key: paramiko.PKey) -> str:
    """Given a public key, return its SHA256 fingerprint as OpenSSH prints it: "SHA256:..."."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def _open_socket(address: str, port: int, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as e:
        raise TransportError(
            f"{address}:{port}: cannot connect: {e.strerror or e}",
            hint="check the address and port in the config, and that sshd runs there",
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _new_transport(sock: socket.socket, key_types: list[str] | None = None) -> paramiko.Transport:
    t = paramiko.Transport(
        sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET
    )
    opts = t.get_security_options()
    supported = list(opts.ciphers)
    opts.ciphers = tuple(
        [c for c in PREFERRED_CIPHERS if c in supported]
        + [c for c in supported if c not in PREFERRED_CIPHERS]
    )
    if key_types:
        current = list(opts.key_types)
        opts.key_types = tuple(
            [k for k in current if k in key_types] + [k for k in current if k not in key_types]
        )
    # See the module docstring (paramiko #822).
    t.packetizer.REKEY_BYTES = REKEY_LIMIT
    t.packetizer.REKEY_PACKETS = REKEY_LIMIT
    return t


def fetch_host_key(address: str, port: int, timeout: float = 15.0) -> paramiko.PKey:
    """Connect to address:port and return the server's host key without
    authenticating (for `vkbackup init`'s trust-on-first-use prompt). Raise
    TransportError if the connection or handshake fails."""
    sock = _open_socket(address, port, timeout)
    t = _new_transport(sock)
    try:
        t.start_client(timeout=timeout)
        return t.get_remote_server_key()
    except LOST as e:
        raise TransportError(f"{address}:{port}: SSH handshake failed: {_describe(e)}") from None
    finally:
        with contextlib.suppress(*LOST):
            t.close()


def _load_known_hosts(path: Path) -> paramiko.HostKeys:
    hk = paramiko.HostKeys()
    try:
        hk.load(str(path))
    except FileNotFoundError:
        pass
    except (OSError, paramiko.SSHException) as e:
        raise HostKeyError(f"{path}: cannot read known_hosts: {e}") from None
    return hk


def _check_host_key(host: HostConfig, key: paramiko.PKey, known: paramiko.HostKeys) -> None:
    name = known_hosts_name(host.address, host.port)
    entry = known.lookup(name)
    fp = fingerprint(key)
    if entry is None or len(entry) == 0:
        raise HostKeyError(
            f"{name}: host key is not in {host.known_hosts} (the server offered "
            f"{key.get_name()} {fp}); refusing to connect to an unknown host",
            hint=f"verify the fingerprint out of band, then `vkbackup init` (it offers to add it) "
            f"or: ssh-keyscan -p {host.port} {host.address} >> {host.known_hosts}",
        )
    expected = entry.get(key.get_name())
    if expected is None:
        known_types = ", ".join(sorted(entry.keys()))
        raise HostKeyError(
            f"{name}: the server offered a {key.get_name()} key ({fp}) but {host.known_hosts} "
            f"only knows {known_types} keys for it",
        )
    if expected.asbytes() != key.asbytes():
        raise HostKeyError(
            f"{name}: HOST KEY CHANGED. {host.known_hosts} has {expected.get_name()} "
            f"{fingerprint(expected)}, the server now offers {key.get_name()} {fp}. "
            "This may be an attack (or a reinstalled server); refusing to connect",
            hint=f"if the change is expected, remove the old line: ssh-keygen -R '{name}' "
            f"-f {host.known_hosts}",
        )


def check_key_file_mode(path: Path) -> None:
    """Refuse an SSH key file that group or others may read, as OpenSSH does and
    as the config file holding a credential is refused: a key others can read
    is a key others may have. A missing file is left to the loader to report.

    Raise ConfigError naming the file, its mode and the chmod that fixes it.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        raise ConfigError(
            f"{path}: SSH key file is readable by group or others (mode {mode:04o}); "
            "refusing to use it",
            hint=f"chmod 600 {shlex.quote(str(path))}",
        )


def _load_private_key(
    path: Path, passphrase: str | None, passphrase_env: str | None = None
) -> paramiko.PKey:
    check_key_file_mode(path)
    try:
        # paramiko's PKey.from_path wants the password as bytes (its stubs say str)
        pw = passphrase.encode() if passphrase is not None else None
        return paramiko.PKey.from_path(path, password=pw)  # type: ignore[arg-type]
    except FileNotFoundError:
        raise TransportError(f"{path}: SSH key file not found") from None
    except (paramiko.PasswordRequiredException, TypeError):
        # cryptography raises TypeError for an OpenSSH-format key without password
        raise TransportError(
            f"{path}: SSH key is passphrase-protected",
            hint="set key_passphrase_env in the host config and export that variable, "
            "or load the key into ssh-agent",
        ) from None
    except (paramiko.SSHException, ValueError) as e:
        if passphrase is not None and _needs_passphrase(path):
            # paramiko's own message for a wrong passphrase is about PEM delimiters
            raise TransportError(
                f"{path}: cannot decrypt the SSH key: wrong passphrase"
                + (f" in ${passphrase_env}" if passphrase_env else ""),
                hint="check the passphrase, e.g. with: ssh-keygen -y -f " + shlex.quote(str(path)),
            ) from None
        raise TransportError(f"{path}: cannot load SSH key: {e}") from None


def _needs_passphrase(path: Path) -> bool:
    """Whether the key file loads without a passphrase only to ask for one."""
    try:
        paramiko.PKey.from_path(path)
    except (paramiko.PasswordRequiredException, TypeError):
        return True
    except (paramiko.SSHException, ValueError, OSError):
        return False
    return False


def connect(host: HostConfig, *, env: Mapping[str, str] | None = None) -> SshTransport:
    """Open an SSH connection to *host* and return it authenticated: the host key
    is checked against host.known_hosts (HostKeyError if unknown or changed),
    then the key file (its passphrase from *env*, default os.environ, under the
    name host.key_passphrase_env) and the SSH agent's keys are offered. Raise
    ConfigError if the key file is readable by group or others, TransportError
    if connecting or authenticating fails (the connection cut included)."""
    env = os.environ if env is None else env
    display = f"{host.user}@{host.address}:{host.port}"
    known = _load_known_hosts(host.known_hosts)
    entry = known.lookup(known_hosts_name(host.address, host.port))
    sock = _open_socket(host.address, host.port, host.connect_timeout)
    t = _new_transport(sock, list(entry.keys()) if entry else None)
    try:
        try:
            t.start_client(timeout=host.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise TransportError(f"{display}: SSH handshake failed: {e}") from None
        _check_host_key(host, t.get_remote_server_key(), known)
        keys: list[paramiko.PKey] = []
        if host.key_file is not None:
            passphrase = None
            if host.key_passphrase_env:
                passphrase = env.get(host.key_passphrase_env)
                if passphrase:
                    register_secret(passphrase)
            keys.append(_load_private_key(host.key_file, passphrase, host.key_passphrase_env))
        with contextlib.suppress(paramiko.SSHException, OSError):
            keys.extend(paramiko.Agent().get_keys())
        if not keys:
            raise TransportError(
                f"{display}: no SSH key to authenticate with",
                hint="set key_file in the host config or start ssh-agent",
            )
        for key in keys:
            try:
                t.auth_publickey(host.user, key)
                break
            except paramiko.AuthenticationException:
                continue
            except LOST as e:
                raise TransportError(f"{display}: authentication failed: {_describe(e)}") from None
        if not t.is_authenticated():
            raise TransportError(
                f"{display}: the server refused every key offered ({len(keys)})",
                hint=f"check {host.user}'s authorized_keys on the host",
            )
        t.set_keepalive(15)
        cipher = getattr(t, "remote_cipher", "?")
        log.debug("connected to %s (cipher %s)", display, cipher)
        return SshTransport(t, display, host.connect_timeout)
    except LOST as e:
        with contextlib.suppress(*LOST):
            t.close()
        raise TransportError(
            f"{display}: connection lost while connecting: {_describe(e)}"
        ) from None
    except BaseException:
        with contextlib.suppress(*LOST):
            t.close()
        raise


class _ChannelReader:
    def __init__(self, proc: SshProcess) -> None:
        self._proc = proc

    def read(self, n: int = -1, /) -> bytes:
        return self._proc._recv(n if n and n > 0 else CHUNK)


class SshProcess:
    """One command on an SSH channel; see the module docstring for how every
    paramiko failure becomes a TransportError. *io_timeout* bounds each wait
    for data (TransportError when it passes); *stderr_keep* is how much of
    stderr's tail is kept."""

    def __init__(
        self,
        transport: SshTransport,
        argv: list[str],
        *,
        io_timeout: float = IO_TIMEOUT,
        stderr_keep: int = STDERR_TAIL_BYTES,
    ) -> None:
        self._host = transport.name
        self._argv = argv
        self._ssh = transport._t
        self._io_timeout = io_timeout
        self._drain_error: BaseException | None = None
        self._killed = False
        try:
            self._chan = transport._t.open_session(timeout=transport._timeout)
        except LOST as e:
            raise self._lost("opening a channel", e) from None
        try:
            self._chan.settimeout(io_timeout)
            self._chan.exec_command(command_string(argv))
        except LOST as e:
            self.kill()
            raise self._lost("starting the command", e) from None
        self._tail = StderrTail(stderr_keep)
        self._t = threading.Thread(target=self._drain, daemon=True)
        self._t.start()
        self._stdout = _ChannelReader(self)

    def _lost(self, doing: str, e: BaseException | None) -> TransportError:
        """The error for a connection that failed while *doing* something."""
        return TransportError(
            f"{self._host}: connection lost while {doing}: {short_command(self._argv)}: "
            + _describe(e)
        )

    def _drain(self) -> None:
        try:
            while True:
                data = self._chan.recv_stderr(65536)
                if not data:
                    return
                self._tail.add(data)
        except LOST as e:  # reported by wait(): a thread cannot raise to the caller
            self._drain_error = e

    def _recv(self, n: int) -> bytes:
        try:
            return self._chan.recv(n)
        except TimeoutError:
            raise TransportError(
                f"{self._host}: no data for {self._io_timeout:g}s from: "
                + short_command(self._argv)
            ) from None
        except LOST as e:
            raise self._lost("reading its output", e) from None

    @property
    def stdout(self) -> Readable:
        return self._stdout

    def write(self, data: bytes) -> None:
        try:
            self._chan.sendall(data)
        except LOST as e:
            raise self._lost("writing its input", e) from None

    def close_stdin(self) -> None:
        # An error here is not raised: the command may have exited without
        # reading, and a lost connection shows in wait() (no exit status).
        with contextlib.suppress(*LOST):
            self._chan.shutdown_write()

    def _alive(self) -> bool:
        """Whether the connection is up. paramiko's transport thread closes the
        channels of a dead connection before it clears is_active(), but after
        it saves the exception that killed it: both are looked at."""
        try:
            return (
                bool(self._ssh.is_active()) and getattr(self._ssh, "saved_exception", None) is None
            )
        except LOST:
            return False

    def wait(self, check: bool = True) -> int:
        """Close stdin, wait for the exit status and close the channel. Raise
        TransportError if the connection was lost on the way (whatever *check*
        says: there is no status to judge), RemoteCommandError with *check* for
        a non-zero status. After kill(), a lost connection is not raised again:
        the caller gave the command up and is already carrying an error."""
        self.close_stdin()
        try:
            status = self._chan.recv_exit_status()
        except LOST as e:
            self.kill()
            raise self._lost("waiting for its exit status", e) from None
        self._t.join(timeout=10)
        if self._killed:
            return self._judge(status, check)
        try:
            self._chan.close()
        except LOST as e:
            raise self._lost("closing the channel", e) from None
        if self._drain_error is not None:
            raise self._lost("reading its stderr", self._drain_error)
        if status == -1 and not self._alive():
            raise self._lost("waiting for its exit status", None)
        return self._judge(status, check)

    def _judge(self, status: int, check: bool) -> int:
        if check and status != 0:
            raise failure(self._host, self._argv, status, self._tail.text())
        return status

    def stderr_tail(self) -> str:
        return self._tail.text()

    def kill(self) -> None:
        # Closing the channel makes sshd hang up the command (SIGHUP/SIGPIPE).
        # Cleanup: a connection already gone has nothing left to close.
        self._killed = True
        try:
            self._chan.close()
        except LOST as e:
            log.debug("%s: closing a channel failed: %s", self._host, _describe(e))


class SshTransport:
    def __init__(self, t: paramiko.Transport, name: str, timeout: float) -> None:
        self._t = t
        self._name = name
        self._timeout = timeout

    @property
    def name(self) -> str:
        return self._name

    @property
    def cipher(self) -> str:
        return str(getattr(self._t, "remote_cipher", "?"))

    def start(self, argv: list[str]) -> SshProcess:
        return SshProcess(self, argv)

    def run(
        self,
        argv: list[str],
        *,
        input: bytes = b"",
        check: bool = True,
        timeout: float | None = None,
    ) -> Completed:
        # *timeout* bounds each wait for data on the channel (as IO_TIMEOUT does)
        proc = SshProcess(
            self,
            argv,
            io_timeout=IO_TIMEOUT if timeout is None else timeout,
            stderr_keep=RUN_STDERR_KEEP,
        )
        return run_process(self._name, argv, proc, input=input, check=check)

    def feed(self, argv: list[str], src: Readable) -> Completed:
        return feed_process(self._name, argv, self.start(argv), src)

    def close(self) -> None:
        # Cleanup, like SshProcess.kill: a connection already cut is closed.
        try:
            self._t.close()
        except LOST as e:
            log.debug("%s: closing the connection failed: %s", self._name, _describe(e))
