"""`SshTransport`: the Transport interface over one paramiko SSH connection.

The host key is checked STRICTLY against the configured known_hosts (never
auto-added); `fetch_host_key` is the one way to see an unknown key, for
`vkbackup init`'s trust-on-first-use prompt. known_hosts is read here
(`read_known_keys`), not by paramiko, so that every key of a host counts, of
any type, hashed names and @revoked lines included. The handshake prefers the
key types known_hosts holds for the host (an `ssh-rsa` line is negotiated as
rsa-sha2-512/256), so a server that has a known key shows that one; a server
that shows only a key of another type is refused like a changed key (a new
key type is trusted only through `vkbackup init`, which shows it beside the
known keys and asks).

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
import binascii
import contextlib
import hashlib
import hmac
import os
import shlex
import socket
import stat
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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


def _blob_fingerprint(blob: bytes) -> str:
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def fingerprint(key: paramiko.PKey) -> str:
    """Given a public key, return its SHA256 fingerprint as OpenSSH prints it: "SHA256:..."."""
    return _blob_fingerprint(key.asbytes())


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


@dataclass(frozen=True)
class KnownKey:
    """One key a known_hosts file holds for a host: its type and public key blob
    (*revoked*: from a @revoked line, a key never to accept)."""

    type: str
    blob: bytes
    revoked: bool = False

    @property
    def fingerprint(self) -> str:
        return _blob_fingerprint(self.blob)

    def describe(self) -> str:
        """The key as `ssh-keygen -l` names it: "ssh-ed25519 SHA256:..."."""
        return f"{self.type} {self.fingerprint}"


#: the host key algorithms that present a key of each type (an RSA key is
#: negotiated as rsa-sha2-*: paramiko and OpenSSH >= 8.8 no longer offer ssh-rsa)
_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


def host_key_algorithms(types: Iterable[str]) -> list[str]:
    """Given key types (as known_hosts names them), return the host key algorithms
    that negotiate a key of those types, in order."""
    out: list[str] = []
    for t in types:
        for a in _ALGORITHMS.get(t, (t,)):
            if a not in out:
                out.append(a)
    return out


def _name_matches(names: str, name: str) -> bool:
    """Whether a known_hosts line's first field names *name*: exactly, or hashed
    (|1|salt|hmac). Wildcard patterns are not understood and match nothing."""
    for pattern in names.split(","):
        if pattern.startswith("|1|"):
            parts = pattern.split("|")
            try:
                salt = base64.b64decode(parts[2], validate=True)
                want = base64.b64decode(parts[3], validate=True)
            except (IndexError, binascii.Error, ValueError):
                continue
            got = hmac.new(salt, name.encode(), hashlib.sha1).digest()
            if hmac.compare_digest(got, want):
                return True
        elif pattern == name:
            return True
    return False


def read_known_keys(path: Path, name: str) -> list[KnownKey]:
    """Given a known_hosts file and a host's name there (`known_hosts_name`), return
    every key the file holds for it, in file order: of any type (also types
    paramiko cannot load, which still make the host a known one), names matched
    exactly or hashed. Every @revoked key is returned (revoked=True) whatever
    host it names; @cert-authority lines are skipped (no certificates here). A
    missing file holds no keys. Raise HostKeyError if the file cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise HostKeyError(f"{path}: cannot read known_hosts: {e.strerror or e}") from None
    keys: list[KnownKey] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = ""
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
        if len(fields) < 3 or marker not in ("", "@revoked"):
            continue
        if not marker and not _name_matches(fields[0], name):
            continue
        try:
            blob = base64.b64decode(fields[2], validate=True)
        except (binascii.Error, ValueError):
            continue
        if blob:
            keys.append(KnownKey(fields[1], blob, revoked=bool(marker)))
    return keys


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


def fetch_host_key(
    address: str, port: int, timeout: float = 15.0, prefer: Sequence[str] = ()
) -> paramiko.PKey:
    """Connect to address:port and return the server's host key without
    authenticating (for `vkbackup init`'s trust-on-first-use prompt), asking
    first for a key of one of the types *prefer* (the types known_hosts holds).
    Raise TransportError if the connection or handshake fails."""
    sock = _open_socket(address, port, timeout)
    t = _new_transport(sock, host_key_algorithms(prefer))
    try:
        t.start_client(timeout=timeout)
        return t.get_remote_server_key()
    except LOST as e:
        raise TransportError(f"{address}:{port}: SSH handshake failed: {_describe(e)}") from None
    finally:
        with contextlib.suppress(*LOST):
            t.close()


def host_key_status(known: Sequence[KnownKey], key: paramiko.PKey) -> str:
    """Given the keys known_hosts holds for a host and the key its server offered,
    return what the key is: "known" (known_hosts holds it), "revoked" (a
    @revoked line names it), "unknown-host" (no key known for the host: a first
    contact), "changed" (another key of the same type is known) or "new-type"
    (keys are known for the host, none of this type)."""
    blob = key.asbytes()
    if any(k.revoked and k.blob == blob for k in known):
        return "revoked"
    valid = [k for k in known if not k.revoked]
    if not valid:
        return "unknown-host"
    if any(k.blob == blob for k in valid):
        return "known"
    if any(k.type == key.get_name() for k in valid):
        return "changed"
    return "new-type"


def _check_host_key(host: HostConfig, key: paramiko.PKey, known: Sequence[KnownKey]) -> None:
    """Accept *key* only if known_hosts (*known*: its keys for this host) holds it.
    Raise HostKeyError otherwise, naming the host, the file and the keys: a key
    of a new type for a known host is refused too (only `vkbackup init` trusts
    one, after showing it beside the known keys and asking)."""
    name = known_hosts_name(host.address, host.port)
    fp = fingerprint(key)
    offered = f"{key.get_name()} {fp}"
    valid = [k for k in known if not k.revoked]
    status = host_key_status(known, key)
    if status == "known":
        return
    if status == "revoked":
        raise HostKeyError(
            f"{name}: the server offered {offered}, a key {host.known_hosts} marks "
            "@revoked; refusing to connect"
        )
    if status == "unknown-host":
        raise HostKeyError(
            f"{name}: host key is not in {host.known_hosts} (the server offered "
            f"{offered}); refusing to connect to an unknown host",
            hint=f"verify the fingerprint out of band, then `vkbackup init` (it offers to add it) "
            f"or: ssh-keyscan -p {host.port} {host.address} >> {host.known_hosts}",
        )
    if status == "changed":
        same = [k for k in valid if k.type == key.get_name()]
        raise HostKeyError(
            f"{name}: HOST KEY CHANGED. {host.known_hosts} has "
            + ", ".join(k.describe() for k in same)
            + f", the server now offers {offered}. "
            "This may be an attack (or a reinstalled server); refusing to connect",
            hint=f"if the change is expected, remove the old line: ssh-keygen -R '{name}' "
            f"-f {host.known_hosts}",
        )
    raise HostKeyError(
        f"{name}: the server offered a key of a new type, {offered}; {host.known_hosts} "
        "knows this host by "
        + ", ".join(k.describe() for k in valid)
        + ". A new key type is not trusted without confirmation; refusing to connect",
        hint=f"verify {fp} out of band, then run `vkbackup init {host.user}@{host.address}:"
        f"{host.port} --known-hosts {host.known_hosts}`: it shows the known and the new key "
        "and asks before adding it",
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
    is checked against host.known_hosts (HostKeyError if unknown, changed,
    revoked or of a type known_hosts has no key of for this host),
    then the key file (its passphrase from *env*, default os.environ, under the
    name host.key_passphrase_env) and the SSH agent's keys are offered. Raise
    ConfigError if the key file is readable by group or others, TransportError
    if connecting or authenticating fails (the connection cut included)."""
    env = os.environ if env is None else env
    display = f"{host.user}@{host.address}:{host.port}"
    known = read_known_keys(host.known_hosts, known_hosts_name(host.address, host.port))
    sock = _open_socket(host.address, host.port, host.connect_timeout)
    t = _new_transport(sock, host_key_algorithms(k.type for k in known if not k.revoked))
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

    def open_tcp(self, address: str, port: int) -> paramiko.Channel:
        """A direct-tcpip channel: the host's sshd connects to *address*:*port* (as
        `ssh -L` does) and the channel carries the bytes both ways. Raise
        TransportError naming the host and the address when it cannot (sshd's
        AllowTcpForwarding no, nothing listening there, the connection gone)."""
        try:
            return self._t.open_channel(
                "direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=self._timeout
            )
        except LOST as e:
            raise TransportError(
                f"{self._name}: cannot open a TCP channel to {address}:{port}: {_describe(e)}",
                hint="sshd must allow TCP forwarding for this user (AllowTcpForwarding)",
            ) from None

    def close(self) -> None:
        # Cleanup, like SshProcess.kill: a connection already cut is closed.
        try:
            self._t.close()
        except LOST as e:
            log.debug("%s: closing the connection failed: %s", self._name, _describe(e))
