"""A small TCP proxy on 127.0.0.1 that can cut connections, for network fault tests.

Interface:
    TcpProxy(target_port, target_host="127.0.0.1")   context manager; .port is where it listens
    proxy.cut_after(up=None, down=None, times=1)
        From now on, count bytes forwarded client->server (up) or server->client
        (down) over all connections; when the count passes the threshold, reset
        the connection carrying those bytes (RST to the client, close upstream),
        then count again from zero; do this *times* times. Connection pooling
        does not matter: the cut hits whichever connection is busy.
    proxy.refuse_all(on=True)   reset every new and existing connection (an outage)
    proxy.cuts                  how many connections were cut so far
    proxy.connections           how many connections were accepted
    proxy.forwarded             {"up": bytes, "down": bytes} passed on so far (all connections)
    proxy.close()

No netem here (LAB-FACTS): this is how tests make a connection die mid-request.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType


def _reset(sock: socket.socket) -> None:
    """Abort a connection: RST where possible. shutdown() first, because a
    close() alone does not wake (or tear down under) a thread blocked in recv()."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Conn:
    def __init__(self, proxy: TcpProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = socket.create_connection((proxy.target_host, proxy.target_port), 5)
        self.upstream.settimeout(None)
        self.dead = threading.Event()

    def start(self) -> None:
        for src, dst, way in (
            (self.client, self.upstream, "up"),
            (self.upstream, self.client, "down"),
        ):
            threading.Thread(target=self._pump, args=(src, dst, way), daemon=True).start()

    def kill(self) -> None:
        if not self.dead.is_set():
            self.dead.set()
            _reset(self.client)
            _reset(self.upstream)

    def _pump(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while not self.dead.is_set():
                data = src.recv(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                keep = self.proxy._account(way, len(data))
                if keep < len(data):
                    if keep:
                        dst.sendall(data[:keep])
                    self.kill()
                    return
                dst.sendall(data)
        except OSError:
            self.kill()
        finally:
            self.proxy._forget(self)


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._lock = threading.Lock()
        self._live: set[_Conn] = set()
        self._budget: dict[str, int | None] = {"up": None, "down": None}
        self._times = 0
        self._refuse = False
        self.cuts = 0
        self.connections = 0
        self.forwarded = {"up": 0, "down": 0}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)  # accept() wakes up to notice close()
        self.port: int = self._sock.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_after(self, *, up: int | None = None, down: int | None = None, times: int = 1) -> None:
        with self._lock:
            self._budget = {"up": up, "down": down}
            self._start = {"up": up, "down": down}
            self._times = times

    def refuse_all(self, on: bool = True) -> None:
        with self._lock:
            self._refuse = on
            victims = list(self._live) if on else []
        for c in victims:
            c.kill()

    def _account(self, way: str, n: int) -> int:
        """Return how many of these n bytes may pass before a cut (n: no cut)."""
        with self._lock:
            if self._refuse:
                return 0
            budget = self._budget.get(way)
            if self._times <= 0 or budget is None:
                self.forwarded[way] += n
                return n
            if n <= budget:
                self._budget[way] = budget - n
                self.forwarded[way] += n
                return n
            self._times -= 1
            self.cuts += 1
            self._budget[way] = self._start[way]  # re-arm for the next cut
            self.forwarded[way] += budget
            return budget

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            self._live.discard(conn)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self.connections += 1
                refuse = self._refuse
            if refuse:
                _reset(client)
                continue
            try:
                conn = _Conn(self, client)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._live.add(conn)
            conn.start()

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._sock.close()
        with self._lock:
            victims = list(self._live)
        for c in victims:
            c.kill()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
