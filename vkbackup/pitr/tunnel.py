"""A Unix socket on the backup machine that reaches a port behind the SSH host.

pg_receivewal (libpq) connects to a path, not to an SSH channel. So the
stream listens on `<dir>/.s.PGSQL.<port>`, the name libpq looks for when its
`host` is a directory, and joins each connection to a fresh direct-tcpip
channel (`SshTransport.open_tcp`: the host's sshd connects to the database
container's address, as `ssh -L` would). A Unix socket and not a loopback
port: the directory is 0700, so only this user can reach prod's database
through it, where any local user can connect to 127.0.0.1.

Bytes move in 64 KiB reads, one thread per direction; when either side ends,
both are shut down and closed (the PostgreSQL protocol never half-closes). Closing the
tunnel closes the listener and every live pair, which is how a stream that
is stopped or whose SSH connection dropped tears its connections down.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from vkbackup.logs import get_logger

log = get_logger("pitr")

READ_SIZE = 64 * 1024


class Pipe(Protocol):
    """What a channel (paramiko.Channel) and a socket both offer."""

    def recv(self, n: int, /) -> bytes: ...

    def sendall(self, data: bytes, /) -> None: ...

    def shutdown(self, how: int, /) -> None: ...

    def close(self) -> None: ...


class Tunnel:
    """Listen on *directory*/.s.PGSQL.*port*; each connection gets `connect()`."""

    def __init__(self, directory: Path, port: int, connect: Callable[[], Pipe]) -> None:
        self.directory = directory
        self.path = directory / f".s.PGSQL.{port}"
        self._connect = connect
        self._closed = threading.Event()
        self._pipes: list[Pipe] = []
        self._lock = threading.Lock()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            self._listener.bind(str(self.path))
        finally:
            os.umask(old)
        self._listener.listen(4)
        self._thread = threading.Thread(target=self._accept, name="wal-tunnel", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                local, _ = self._listener.accept()
            except OSError:
                return
            try:
                remote = self._connect()
            except Exception as e:
                log.warning("WAL stream: cannot reach the database through SSH: %s", e)
                local.close()
                continue
            with self._lock:
                self._pipes += [local, remote]
            for a, b in ((local, remote), (remote, local)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: Pipe, dst: Pipe) -> None:
        try:
            while True:
                data = src.recv(READ_SIZE)
                if not data:
                    break
                dst.sendall(data)
        except Exception as e:
            log.debug("WAL stream tunnel: %s", e)
        finally:
            for p in (src, dst):
                _end(p)
            with self._lock:
                self._pipes = [p for p in self._pipes if p is not src and p is not dst]

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            pipes, self._pipes = self._pipes, []
        for p in pipes:
            _end(p)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _end(p: Pipe) -> None:
    """Shut *p* down, then close it: close() alone leaves the connection open while
    the other direction's thread still waits in recv() on it, so the peer would
    not see the end."""
    with contextlib.suppress(Exception):
        p.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        p.close()
