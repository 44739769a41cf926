"""Stand-in for VisualKit's application containers (runs inside the lab's app images).

One small stdlib HTTP server, configured by environment:
    SERVICE       name reported by /health (platform-api, vk-agent, janus-gateway, chatwoot, ...)
    PORT          port to listen on (all addresses inside the container)
    REQUIRED_ENV  comma-separated variables that must be set (from the .env) for /health to pass
    STORAGE_DIR   optional directory the app reads and writes (a named volume)
    DEPENDS_TCP   optional comma-separated host:port that must accept TCP for /health to pass
    REQUIRED_FILES optional comma-separated paths that must exist (e.g. config in a volume)
    CHECK_POSTGRES "1": log in to PostgreSQL with the .env's POSTGRES_HOST, POSTGRES_USERNAME,
                  POSTGRES_PASSWORD and POSTGRES_DATABASE (psql); a wrong secret fails /health
    CHECK_REDIS   "1": AUTH to Redis at redis:6379 with the .env's REDIS_PASSWORD, then PING
    EXTRA_PORTS   optional comma-separated ports served by the same handler (Janus's 8188)

Endpoints:
    GET  /health           200 {"status": "ok", ...} or 503 {"status": "failing", "problems": [...]}
    GET  /janus/info       Janus's server info (janus-gateway only), 503 while /health fails
    GET  /storage/<path>   the file under STORAGE_DIR (404 if missing)
    PUT  /storage/<path>   write the request body there (parents created); 201
    GET  /storage-index    {"files": N, "bytes": N} of STORAGE_DIR
Never prints environment values.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SERVICE = os.environ.get("SERVICE", "app")
PORT = int(os.environ.get("PORT", "8000"))
STORAGE = Path(os.environ["STORAGE_DIR"]) if os.environ.get("STORAGE_DIR") else None


def problems() -> list[str]:
    found: list[str] = []
    for name in filter(None, os.environ.get("REQUIRED_ENV", "").split(",")):
        if not os.environ.get(name):
            found.append(f"missing environment variable {name}")
    if STORAGE is not None and not (STORAGE.is_dir() and os.access(STORAGE, os.W_OK)):
        found.append(f"storage {STORAGE} is not a writable directory")
    for path in filter(None, os.environ.get("REQUIRED_FILES", "").split(",")):
        if not os.path.exists(path):
            found.append(f"missing file {path}")
    if os.environ.get("CHECK_POSTGRES") == "1":
        found += _postgres_login()
    if os.environ.get("CHECK_REDIS") == "1":
        found += _redis_login()
    for dep in filter(None, os.environ.get("DEPENDS_TCP", "").split(",")):
        host, _, port = dep.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                pass
        except OSError as e:
            found.append(f"{dep} unreachable: {e.strerror or e}")
    return found


def _postgres_login() -> list[str]:
    host = os.environ.get("POSTGRES_HOST", "postgres")
    user = os.environ.get("POSTGRES_USERNAME", "postgres")
    db = os.environ.get("POSTGRES_DATABASE", "postgres")
    env = {
        **os.environ,
        "PGPASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
        "PGCONNECT_TIMEOUT": "3",
    }
    try:
        cp = subprocess.run(
            ["psql", "-X", "-q", "-h", host, "-U", user, "-d", db, "-c", "select 1"],
            env=env,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"postgres login as {user}@{host}/{db} failed: {e}"]
    if cp.returncode != 0:
        why = cp.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return [f"postgres login as {user}@{host}/{db} failed: {why[0]}"]
    return []


def _redis_login() -> list[str]:
    password = os.environ.get("REDIS_PASSWORD", "")
    try:
        with socket.create_connection(("redis", 6379), timeout=3) as sock:
            b = password.encode()
            sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(b), b))
            answer = b""
            while answer.count(b"\r\n") < 2:
                chunk = sock.recv(256)
                if not chunk:
                    break
                answer += chunk
    except OSError as e:
        return [f"redis unreachable: {e.strerror or e}"]
    if not answer.startswith(b"+OK") or b"+PONG" not in answer:
        first = answer.split(b"\r\n")[0].decode(errors="replace")
        return [f"redis login failed: {first or 'no answer'}"]
    return []


def _storage_path(rel: str) -> Path | None:
    if STORAGE is None:
        return None
    target = (STORAGE / rel).resolve()
    if STORAGE.resolve() not in target.parents:
        return None
    return target


class Handler(BaseHTTPRequestHandler):
    server_version = f"{SERVICE}-lab/1"

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, doc: object) -> None:
        self._send(code, json.dumps(doc).encode() + b"\n")

    def do_GET(self) -> None:
        if self.path == "/health":
            found = problems()
            if found:
                self._json(503, {"status": "failing", "service": SERVICE, "problems": found})
            else:
                self._json(200, {"status": "ok", "service": SERVICE})
        elif self.path.startswith("/janus/info") and SERVICE == "janus-gateway":
            found = problems()
            if found:
                self._json(503, {"janus": "error", "problems": found})
            else:
                self._json(
                    200,
                    {
                        "janus": "server_info",
                        "name": "Janus WebRTC Server (vkbackup lab stand-in)",
                        "plugins": {"janus.plugin.audiobridge": {"name": "AudioBridge"}},
                    },
                )
        elif self.path == "/storage-index" and STORAGE is not None:
            files = 0
            size = 0
            for dirpath, _dirs, names in os.walk(STORAGE):
                for n in names:
                    p = os.path.join(dirpath, n)
                    if os.path.isfile(p) and not os.path.islink(p):
                        files += 1
                        size += os.path.getsize(p)
            self._json(200, {"files": files, "bytes": size})
        elif self.path.startswith("/storage/"):
            target = _storage_path(self.path[len("/storage/") :])
            if target is None or not target.is_file():
                self._json(404, {"error": "not found"})
            else:
                self._send(200, target.read_bytes(), "application/octet-stream")
        else:
            self._json(404, {"error": "not found"})

    def do_PUT(self) -> None:
        target = (
            _storage_path(self.path[len("/storage/") :])
            if self.path.startswith("/storage/")
            else None
        )
        if target is None:
            self._json(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        self._json(201, {"stored": str(target.relative_to(STORAGE or target)), "bytes": len(body)})

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{SERVICE}: {self.command} {self.path.split('?')[0]}\n")


def main() -> None:
    # PID 1 in a container ignores SIGTERM unless it installs a handler: without this,
    # `docker stop` waits its whole timeout, unlike the real services this stands in for.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    for extra in filter(None, os.environ.get("EXTRA_PORTS", "").split(",")):
        other = ThreadingHTTPServer(("0.0.0.0", int(extra)), Handler)
        threading.Thread(target=other.serve_forever, daemon=True).start()
    httpd = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    print(f"{SERVICE}: listening on :{PORT}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
