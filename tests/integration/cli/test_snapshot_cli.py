"""`vkbackup snapshot` as a user runs it (a subprocess, SSH to a real sshd, local storage),
with monitoring: healthchecks-style pings, a JSON webhook and the Prometheus textfile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.integration.transport.conftest import Sshd
from vkbackup.crypto import generate_identity, write_identity_file


class Recorder(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Recorder.calls.append(("POST", self.path, body))
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:
        Recorder.calls.append(("GET", self.path, b""))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def http() -> Iterator[str]:
    Recorder.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def write_config(tmp: Path, sshd: Sshd, http: str, paths: list[str]) -> tuple[Path, Path]:
    ident = generate_identity()
    (tmp / "metrics").mkdir(exist_ok=True)  # node_exporter's collector directory
    id_file = tmp / "identity.txt"
    write_identity_file(id_file, ident)
    cfg = tmp / "vkbackup.toml"
    cfg.write_text(
        f"""
[storage]
path = "{tmp / "store"}"

[encryption]
recipients = ["{ident.recipient()}"]
identity = "{id_file}"

[monitoring]
healthchecks_url = "{http}/ping/{{host}}"
webhook_url = "{http}/hook"
textfile = "{tmp / "metrics" / "vkbackup.prom"}"

[hosts.box]
address = "127.0.0.1"
port = {sshd.port}
key_file = "{sshd.client_key}"
known_hosts = "{sshd.known_hosts}"

[[hosts.box.sources]]
type = "files"
name = "etc"
paths = {json.dumps(paths)}
"""
    )
    return cfg, id_file


def vk(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VKBACKUP_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", "--config", str(cfg), *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_snapshot_over_ssh_with_monitoring(tmp_path: Path, sshd: Sshd, http: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / ".env").write_text("API_TOKEN=tok-4f8e2a9c1b7d\n")
    cfg, _ = write_config(tmp_path, sshd, http, [str(src / ".env")])
    cp = vk(cfg, "snapshot", "--json")
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["status"] == "complete" and doc["host"] == "box"
    paths = [(m, p) for m, p, _ in Recorder.calls]
    assert ("GET", "/ping/box/start") in paths or ("POST", "/ping/box/start") in paths
    assert any(p == "/ping/box" for _, p in paths)
    assert any(p == "/hook" for _, p in paths)
    prom = (tmp_path / "metrics" / "vkbackup.prom").read_text()
    assert 'vkbackup_last_success_timestamp_seconds{host="box"}' in prom
    assert 'vkbackup_last_status{host="box"} 0' in prom
    # nothing secret in what was sent out
    for _, _, body in Recorder.calls:
        assert b"tok-4f8e2a9c1b7d" not in body
    listing = vk(cfg, "list", "--json")
    assert listing.returncode == 0 and doc["id"] in listing.stdout
    plan = vk(cfg, "restore", "latest", "--to", "box", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "files:etc" in plan.stdout


def test_failed_source_exits_3_and_pings_failure(tmp_path: Path, sshd: Sshd, http: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("ok\n")
    cfg, _ = write_config(tmp_path, sshd, http, [str(src / "ok.txt")])
    text = cfg.read_text() + (
        f'\n[[hosts.box.sources]]\ntype = "files"\nname = "gone"\npaths = ["{src}/missing*"]\n'
    )
    cfg.write_text(text)
    cp = vk(cfg, "snapshot")
    assert cp.returncode == 3, cp.stderr
    assert "missing*" in cp.stderr
    fails = [body for _, p, body in Recorder.calls if p == "/ping/box/fail"]
    assert fails and b"gone" in fails[0]
    prom = (tmp_path / "metrics" / "vkbackup.prom").read_text()
    assert 'vkbackup_last_status{host="box"} 1' in prom


def test_unreachable_host_exits_1_names_it_and_pings_failure(tmp_path: Path, http: str) -> None:
    fake = Sshd(port=1, dir=tmp_path, client_key=tmp_path / "k", known_hosts=tmp_path / "kh",
                host_pub="")  # fmt: skip
    cfg, _ = write_config(tmp_path, fake, http, ["/etc/hostname"])
    cp = vk(cfg, "snapshot")
    assert cp.returncode == 1
    assert "127.0.0.1:1: cannot connect" in cp.stderr
    assert "Traceback" not in cp.stderr
    assert any(p == "/ping/box/fail" for _, p, _ in Recorder.calls)
