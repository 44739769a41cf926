"""A fault-injecting HTTP/1.1 reverse proxy for S3, on 127.0.0.1, for tests.

It sits between boto3 and a real S3 server (the session's SeaweedFS) and
forwards each request byte for byte: the request line and headers unchanged
(the Host header stays the proxy's address, which is what SigV4 signed, so
the server's signature check passes), Content-Length, chunked and aws-chunked
bodies (trailers included), `Expect: 100-continue`, and keep-alive (one
upstream connection per client connection, reopened if the server closes it
while idle). It parses only what it needs to find where each request and
response ends; it never pipelines nor retries anything itself.

A fault plan decides, request by request, what happens:

    Fail(status, code, after=None)
        The server gets the request head and the first *after* bytes of its body
        (default: half; never all of it), then that upstream connection is reset,
        so the server sees an upload die mid-body. The client gets a proper S3 XML
        error (`<Error><Code>SlowDown</Code>...`, `Connection: close`) while it is
        still sending; the proxy reads and discards the rest of the body so the
        client reads that answer (no reset racing it), then closes.
    Drop(body_bytes=None)
        The request is forwarded whole and the server answers (for a write: the
        object is stored). The answer is then withheld and the client connection
        closed: with body_bytes=None nothing of it arrives; with N, the head and
        the first N bytes of the body arrive (a GET cut mid-body).
    Pass()
        Forward as usual. A due Pass rule shields the request from the rules
        added after it; proxy.count() makes a Pass rule that is never due, so it
        only counts.

    Rule(method, key, action, query=None, nth=1, times=1)
        matches requests whose method is *method* ("*": any), whose object key
        (the URL path after the bucket, URL-decoded; "" for bucket requests)
        matches the fnmatch pattern *key* ("*" crosses "/"), and whose raw query
        string contains a match of the regex *query* (e.g. r"(^|&)partNumber=3(&|$)"
        for UploadPart 3). Path-style addressing only (/bucket/key). Every rule
        counts every request it matches (.matched), whoever acts on it; it is due
        for the nth .. nth+times-1 of them (times=0: never). When several rules
        are due for one request, the first added acts (.fired counts that) and
        the others' turn passes: to chain faults on one key, give each rule its
        own nth. .server_got: for a Fail, how many body bytes the server
        received of each request it failed.

    proxy = S3FaultProxy(upstream_endpoint)      context manager; starts listening
    proxy.endpoint                               "http://127.0.0.1:PORT": give it to boto3
    proxy.fail(method, key, status, code, *, query=None, nth=1, times=1, after=None) -> Rule
    proxy.drop(method, key, *, query=None, nth=1, times=1, body_bytes=None) -> Rule
    proxy.count(method, key, *, query=None) -> Rule       a Pass rule, never due
    proxy.add(rule) -> Rule
    proxy.clear()                                forget the plan (the counters stay)
    proxy.events    every request seen, in order: Event(method, key, query, action,
                    chunked, expect, range, status); action is "pass", "fail 503
                    SlowDown", "drop" or "drop after N"; status is the server's
                    final answer (also when dropped) or the injected one"
    proxy.faults    how many requests a Fail or Drop hit
    proxy.connections   client connections accepted
    proxy.errors    protocol errors the proxy met (a test asserts it stays empty)
    proxy.close()

No netem here (LAB-FACTS): this is how tests make a real server's answers go
wrong on the wire, where botocore's before-send handlers (storage/inject.py)
only fake them inside the client.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import select
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from types import TracebackType
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

MAX_HEAD = 64 * 1024
DRAIN_TIMEOUT = 20.0  # seconds a client may take to send the rest of a failed body
UPSTREAM_TIMEOUT = 120.0  # seconds of silence from the server before the proxy gives up

REASONS = {500: "Internal Server Error", 503: "Service Unavailable", 400: "Bad Request"}
MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Please reduce your request rate.",
}


@dataclass(frozen=True)
class Fail:
    status: int
    code: str
    after: int | None = None


@dataclass(frozen=True)
class Drop:
    body_bytes: int | None = None


@dataclass(frozen=True)
class Pass:
    pass


Action = Fail | Drop | Pass


@dataclass
class Rule:
    method: str
    key: str
    action: Action
    query: str | None = None
    nth: int = 1
    times: int = 1
    matched: int = 0
    fired: int = 0
    server_got: list[int] = field(default_factory=list)  # body bytes sent on, per Fail

    def matches(self, method: str, key: str, query: str) -> bool:
        if self.method != "*" and self.method.upper() != method:
            return False
        if not fnmatch.fnmatchcase(key, self.key):
            return False
        return self.query is None or re.search(self.query, query) is not None


@dataclass
class Event:
    method: str
    key: str
    query: str
    action: str
    chunked: bool = False  # the request body came chunked
    expect: bool = False  # the request asked for 100-continue
    range: str | None = None  # its Range header (a resumed GET)
    status: int | None = None  # the server's final status (Drop: the one withheld);
    # Fail: the status injected; None: no answer came


class ProtocolError(Exception):
    """The bytes on one connection are not HTTP/1.1 the proxy can frame."""


def _reset(sock: socket.socket | None) -> None:
    """Abort a connection with RST (SO_LINGER 0), waking any thread blocked on it."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: socket.socket | None) -> None:
    """Close a connection gracefully (FIN)."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Reader:
    """Buffered reads from one socket: heads, lines, exact byte counts."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def head(self) -> bytes | None:
        """The next message head (through the blank line); None at a clean EOF."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                out = bytes(self.buf[: end + 4])
                del self.buf[: end + 4]
                return out
            if len(self.buf) > MAX_HEAD:
                raise ProtocolError("message head too long")
            if not self._fill():
                if self.buf:
                    raise ProtocolError("connection closed inside a message head")
                return None

    def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                out = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                return out
            if len(self.buf) > MAX_HEAD:
                raise ProtocolError("line too long")
            if not self._fill():
                raise ProtocolError("connection closed inside a chunked body")

    def exact(self, n: int) -> Iterator[bytes]:
        while n > 0:
            if not self.buf and not self._fill():
                raise ProtocolError(f"connection closed with {n} body bytes missing")
            take = bytes(self.buf[:n])
            del self.buf[: len(take)]
            n -= len(take)
            yield take

    def rest(self) -> Iterator[bytes]:
        """Everything until the peer closes (a response framed by the close)."""
        while True:
            if self.buf:
                out = bytes(self.buf)
                self.buf.clear()
                yield out
            if not self._fill():
                return


@dataclass
class _Message:
    head: bytes
    start: list[str]  # the first line, split in three
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names, joined

    @classmethod
    def parse(cls, head: bytes) -> _Message:
        lines = head.decode("latin-1").split("\r\n")
        start = lines[0].split(" ", 2)
        if len(start) < 2:
            raise ProtocolError(f"bad start line {lines[0]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"bad header line {line!r}")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return cls(head, start, headers)

    def has_token(self, name: str, token: str) -> bool:
        return token in [t.strip().lower() for t in self.headers.get(name, "").split(",")]

    def length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None:
            return None
        try:
            n = int(value.split(",")[0])
        except ValueError as e:
            raise ProtocolError(f"bad Content-Length {value!r}") from e
        if n < 0:
            raise ProtocolError(f"bad Content-Length {value!r}")
        return n


def _body(
    reader: _Reader,
    msg: _Message,
    *,
    request: bool,
    no_body: bool = False,
    ending: list[bool] | None = None,
) -> Iterator[bytes]:
    """The raw bytes of a message body as they are on the wire (chunk framing
    included), read from *reader*: Content-Length, chunked, or until close. For a
    chunked body, *ending* (if given) gets True appended just before the last chunk
    (size 0) is yielded."""
    if no_body:
        return
    if msg.has_token("transfer-encoding", "chunked"):
        while True:
            size_line = reader.line()
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError as e:
                raise ProtocolError(f"bad chunk size line {size_line!r}") from e
            if size == 0 and ending is not None:
                ending.append(True)
            yield size_line
            if size == 0:
                while True:  # trailers (aws-chunked puts its checksum here)
                    trailer = reader.line()
                    yield trailer
                    if trailer in (b"\r\n", b"\n"):
                        return
            yield from reader.exact(size)
            crlf = reader.line()
            if crlf.strip():
                raise ProtocolError("chunk data longer than its size")
            yield crlf
        return
    n = msg.length()
    if n is not None:
        yield from reader.exact(n)
    elif not request:
        yield from reader.rest()


@dataclass
class _Request:
    msg: _Message
    method: str
    bucket: str
    key: str
    query: str

    @classmethod
    def parse(cls, head: bytes) -> _Request:
        msg = _Message.parse(head)
        if len(msg.start) != 3 or not msg.start[2].startswith("HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x request: {msg.start!r}")
        url = urlsplit(msg.start[1])
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        return cls(msg, msg.start[0].upper(), bucket, key, url.query)

    @property
    def expects_continue(self) -> bool:
        return self.msg.has_token("expect", "100-continue")

    @property
    def has_body(self) -> bool:
        return self.msg.has_token("transfer-encoding", "chunked") or bool(self.msg.length())

    @property
    def keep_alive(self) -> bool:
        return not self.msg.has_token("connection", "close")


def _status(resp: _Message) -> int:
    try:
        return int(resp.start[1])
    except (IndexError, ValueError) as e:
        raise ProtocolError(f"bad status line {resp.start!r}") from e


class _Conn:
    """One client connection: requests served one after another (boto3 never pipelines)."""

    def __init__(self, proxy: S3FaultProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.creader = _Reader(client)
        self.upstream: socket.socket | None = None
        self.ureader: _Reader | None = None
        self.event: Event | None = None  # the request being served

    # -- upstream -----------------------------------------------------------------

    def _connect(self) -> tuple[socket.socket, _Reader]:
        if self.upstream is None or self.ureader is None:
            up = socket.create_connection(self.proxy.target, timeout=10)
            up.settimeout(UPSTREAM_TIMEOUT)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.upstream, self.ureader = up, _Reader(up)
            self.proxy._track(up)
        return self.upstream, self.ureader

    def _drop_upstream(self, *, abort: bool) -> None:
        if self.upstream is not None:
            self.proxy._untrack(self.upstream)
            (_reset if abort else _close)(self.upstream)
        self.upstream = self.ureader = None

    def _wait_for_request(self) -> bool:
        """Wait until the client sends (True) or closes (a read then sees EOF); an
        idle upstream that speaks or closes meanwhile is dropped (reopened later)."""
        while not self.proxy.closed:
            if self.creader.buf:
                return True
            socks = [self.client] + ([self.upstream] if self.upstream is not None else [])
            ready, _, _ = select.select(socks, [], [], 0.5)
            if self.upstream is not None and self.upstream in ready:
                self._drop_upstream(abort=False)
            if self.client in ready:
                return True
        return False

    # -- serving ------------------------------------------------------------------

    def serve(self) -> None:
        try:
            while self._wait_for_request():
                head = self.creader.head()
                if head is None:
                    return
                req = _Request.parse(head)
                action, rule, self.event = self.proxy._decide(req)
                if isinstance(action, Fail):
                    assert rule is not None
                    self.event.status = action.status
                    self._fail(req, action, rule)
                    return
                if not self._forward(req, action):
                    return
        except (OSError, ValueError, ProtocolError) as e:  # ValueError: select on a closed fd
            if not self.proxy.closed:
                self.proxy._error(f"{type(e).__name__}: {e}")
        finally:
            self._drop_upstream(abort=True)
            _close(self.client)
            self.proxy._untrack(self.client)

    def _read_response(self, req: _Request, relay_interim: bool) -> _Message:
        """The next final response head from the server (1xx heads relayed or skipped)."""
        _, ureader = self._connect()
        while True:
            head = ureader.head()
            if head is None:
                raise ProtocolError(f"server closed without answering {req.method} {req.key}")
            resp = _Message.parse(head)
            status = _status(resp)
            if 100 <= status < 200 and status != 101:
                if relay_interim:
                    self.client.sendall(head)
                if status == 100 and req.expects_continue:
                    return resp
                continue
            return resp

    def _forward(self, req: _Request, action: Action) -> bool:
        """Pass or Drop one request; return whether the client connection stays open."""
        up, _ = self._connect()
        up.sendall(req.msg.head)
        if req.expects_continue:
            resp = self._read_response(req, relay_interim=True)
            if _status(resp) != 100:
                # a final answer before the body: the client may send it or not, so the
                # connection cannot carry another request after this one
                self._deliver(req, resp, action)
                return False
        for piece in _body(self.creader, req.msg, request=True):
            up.sendall(piece)
        resp = self._read_response(req, relay_interim=True)
        if _status(resp) == 100:  # a late 100 after the body: skip to the final answer
            resp = self._read_response(req, relay_interim=False)
        return self._deliver(req, resp, action) and req.keep_alive

    def _deliver(self, req: _Request, resp: _Message, action: Action) -> bool:
        _, ureader = self._connect()
        status = _status(resp)
        if self.event is not None:
            self.event.status = status
        no_body = req.method == "HEAD" or status in (204, 304)
        body = _body(ureader, resp, request=False, no_body=no_body)
        if isinstance(action, Drop):
            if action.body_bytes is None:
                for _ in body:  # the server finished; its answer goes nowhere
                    pass
            else:
                self.client.sendall(resp.head)
                left = action.body_bytes
                for piece in body:
                    if left <= 0:
                        break
                    self.client.sendall(piece[:left])
                    left -= len(piece[:left])
            self._drop_upstream(abort=True)
            return False
        self.client.sendall(resp.head)
        for piece in body:
            self.client.sendall(piece)
        framed_by_close = not no_body and (
            resp.length() is None and not resp.has_token("transfer-encoding", "chunked")
        )
        if framed_by_close or resp.has_token("connection", "close"):
            self._drop_upstream(abort=False)
            return False
        return True

    def _fail(self, req: _Request, fail: Fail, rule: Rule) -> None:
        """Part of the body to the server, then reset it; the error to the client."""
        if req.expects_continue:
            self.client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        ending: list[bool] = []
        body = _body(self.creader, req.msg, request=True, ending=ending)
        if req.has_body:
            length = req.msg.length()
            if fail.after is not None:
                want = fail.after
            else:
                want = length // 2 if length is not None else 64 * 1024
            if length is not None:
                want = min(want, max(length - 1, 0))  # never the whole body
            self._drop_upstream(abort=True)  # a fresh connection carries the doomed request
            up, _ = self._connect()
            up.sendall(req.msg.head)
            sent = 0
            while sent < want:
                piece = next(body, b"")
                if not piece or ending:  # never the end of a chunked body either
                    break
                part = piece[: want - sent]
                up.sendall(part)
                sent += len(part)
            self.proxy._server_got(rule, sent)
            self._drop_upstream(abort=True)
        self.client.sendall(self.proxy._error_response(req, fail))
        self.client.settimeout(DRAIN_TIMEOUT)
        with contextlib.suppress(OSError, ProtocolError):
            for _ in body:  # let the client finish sending, so it reads the answer
                pass
            self.client.shutdown(socket.SHUT_WR)
            while self.client.recv(65536):  # until the client closes its side
                pass


class S3FaultProxy:
    def __init__(self, upstream: str) -> None:
        url = urlsplit(upstream)
        if url.scheme != "http" or url.hostname is None or url.port is None:
            raise ValueError(f"need an http://HOST:PORT endpoint, got {upstream!r}")
        self.target = (url.hostname, url.port)
        self.rules: list[Rule] = []
        self.events: list[Event] = []
        self.errors: list[str] = []
        self.faults = 0
        self.connections = 0
        self.closed = False
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)  # accept() wakes up to notice close()
        self.port: int = self._sock.getsockname()[1]
        self._accepter = threading.Thread(target=self._accept, name="s3fault-accept", daemon=True)
        self._accepter.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the plan -------------------------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        if rule.nth < 1 or rule.times < 0:
            raise ValueError(f"need nth >= 1 and times >= 0: {rule}")
        with self._lock:
            self.rules.append(rule)
        return rule

    def fail(
        self,
        method: str,
        key: str,
        status: int,
        code: str,
        *,
        query: str | None = None,
        nth: int = 1,
        times: int = 1,
        after: int | None = None,
    ) -> Rule:
        return self.add(Rule(method, key, Fail(status, code, after), query, nth, times))

    def drop(
        self,
        method: str,
        key: str,
        *,
        query: str | None = None,
        nth: int = 1,
        times: int = 1,
        body_bytes: int | None = None,
    ) -> Rule:
        return self.add(Rule(method, key, Drop(body_bytes), query, nth, times))

    def count(self, method: str, key: str, *, query: str | None = None) -> Rule:
        return self.add(Rule(method, key, Pass(), query, times=0))

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def _decide(self, req: _Request) -> tuple[Action, Rule | None, Event]:
        with self._lock:
            chosen: Action = Pass()
            acting: Rule | None = None
            for rule in self.rules:
                if not rule.matches(req.method, req.key, req.query):
                    continue
                rule.matched += 1
                due = rule.nth <= rule.matched < rule.nth + rule.times
                if due and acting is None:
                    acting = rule
                    rule.fired += 1
                    chosen = rule.action
            if isinstance(chosen, Fail):
                label = f"fail {chosen.status} {chosen.code}"
            elif isinstance(chosen, Drop):
                label = "drop" if chosen.body_bytes is None else f"drop after {chosen.body_bytes}"
            else:
                label = "pass"
            if not isinstance(chosen, Pass):
                self.faults += 1
            chunked = req.msg.has_token("transfer-encoding", "chunked")
            event = Event(
                req.method,
                req.key,
                req.query,
                label,
                chunked,
                req.expects_continue,
                req.msg.headers.get("range"),
            )
            self.events.append(event)
            return chosen, acting, event

    def _error_response(self, req: _Request, fail: Fail) -> bytes:
        with self._lock:
            request_id = f"S3FAULT{len(self.events):08d}"
        resource = escape(f"/{req.bucket}/{req.key}" if req.key else f"/{req.bucket}")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(fail.code)}</Code>"
            f"<Message>{escape(MESSAGES.get(fail.code, fail.code))} (s3fault)</Message>"
            + (f"<BucketName>{escape(req.bucket)}</BucketName>" if req.bucket else "")
            + (f"<Key>{escape(req.key)}</Key>" if req.key else "")
            + f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>"
        ).encode()
        reason = REASONS.get(fail.status, "Error")
        head = (
            f"HTTP/1.1 {fail.status} {reason}\r\n"
            f"Date: {formatdate(usegmt=True)}\r\n"
            "Server: s3fault\r\n"
            "Content-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-amz-request-id: {request_id}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        return head if req.method == "HEAD" else head + body

    # -- bookkeeping ----------------------------------------------------------------

    def _server_got(self, rule: Rule, n: int) -> None:
        with self._lock:
            rule.server_got.append(n)

    def _error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._live.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._live.discard(sock)

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(self, client)
            thread = threading.Thread(target=conn.serve, name="s3fault-conn", daemon=True)
            with self._lock:
                self.connections += 1
                self._live.add(client)
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def close(self) -> None:
        self.closed = True
        self._accepter.join(timeout=5)
        with contextlib.suppress(OSError):
            self._sock.close()
        with self._lock:
            victims = list(self._live)
            threads = list(self._threads)
        for sock in victims:
            _reset(sock)
        for t in threads:
            t.join(timeout=5)

    def __enter__(self) -> S3FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
