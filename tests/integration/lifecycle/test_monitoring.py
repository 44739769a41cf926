"""Monitoring against a real HTTP server on 127.0.0.1 (healthchecks-style pings
and a JSON webhook), and the Prometheus textfile on disk."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vkbackup.actions.snapshot import SnapshotResult, SourceResult
from vkbackup.config.model import MonitoringConfig
from vkbackup.errors import LockError
from vkbackup.logs import register_secret
from vkbackup.monitoring import (
    RunMetrics,
    Sample,
    SourceMetrics,
    notify,
    parse_textfile,
    render_textfile,
    report_error,
    report_result,
    safe_url,
    write_textfile,
)


@dataclass
class Request:
    method: str
    path: str
    content_type: str
    body: bytes


@dataclass
class Server:
    url: str
    requests: list[Request] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            state.requests.append(
                Request("POST", self.path, self.headers.get("Content-Type", ""), body)
            )
            if state.delay:
                time.sleep(state.delay)
            try:
                self.send_response(state.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")
            except OSError:
                pass  # the client gave up (the timeout test)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


UUID = "5f1c3e9a-0000-4000-8000-0123456789ab"


def test_healthchecks_start_success_failure(server: Server) -> None:
    cfg = MonitoringConfig(healthchecks_url=f"{server.url}/{UUID}")
    assert notify(cfg, "start", host="prod") == []
    summary = {"id": "20260101T021500Z-abcd", "status": "complete", "bytes_new": 123}
    assert notify(cfg, "success", host="prod", summary=summary) == []
    register_secret("hunter2-very-secret")
    reason = "source db failed: password hunter2-very-secret rejected"
    assert notify(cfg, "failure", host="prod", reason=reason) == []
    start, ok, fail = server.requests
    assert (start.method, start.path, start.body) == ("POST", f"/{UUID}/start", b"")
    assert ok.path == f"/{UUID}"
    assert ok.body.decode() == (
        "vkbackup prod: id=20260101T021500Z-abcd status=complete bytes_new=123"
    )
    assert fail.path == f"/{UUID}/fail"
    assert fail.body.decode() == "source db failed: password *** rejected"


def test_webhook_json_and_host_placeholder(server: Server) -> None:
    cfg = MonitoringConfig(
        healthchecks_url=server.url + "/ping/{host}", webhook_url=server.url + "/hook"
    )
    register_secret("s3cr3t-token-value")
    warnings = notify(
        cfg,
        "failure",
        host="db1",
        summary={"status": "failed", "error": "token s3cr3t-token-value expired", "n": [1]},
        reason="lock held by root@x",
    )
    assert warnings == []
    ping, hook = server.requests
    assert ping.path == "/ping/db1/fail"
    assert hook.path == "/hook" and hook.content_type == "application/json"
    doc = json.loads(hook.body)
    assert doc["tool"] == "vkbackup" and doc["event"] == "failure" and doc["host"] == "db1"
    assert doc["reason"] == "lock held by root@x"
    assert doc["summary"] == {"status": "failed", "error": "token *** expired", "n": [1]}
    assert datetime.fromisoformat(doc["time"]).tzinfo is not None
    assert b"s3cr3t" not in hook.body


def test_a_failing_endpoint_is_a_warning_never_an_error(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    server.status = 500
    cfg = MonitoringConfig(healthchecks_url=f"{server.url}/{UUID}")
    logger = logging.getLogger("vkbackup.monitoring")
    logger.addHandler(caplog.handler)  # vkbackup's logger may not propagate to the root
    try:
        [w] = notify(cfg, "success", host="prod", attempts=2)
    finally:
        logger.removeHandler(caplog.handler)
    assert "HTTP 500" in w and UUID not in w  # the token in the URL is not logged
    assert len(server.requests) == 2  # a server error is retried once
    assert any("HTTP 500" in r.getMessage() for r in caplog.records)
    server.requests.clear()
    server.status = 404
    [w] = notify(cfg, "start", host="prod", attempts=3)
    assert "HTTP 404" in w and len(server.requests) == 1  # a client error is not


def test_unreachable_and_slow_endpoints_time_out_quickly(server: Server) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cfg = MonitoringConfig(webhook_url=f"http://127.0.0.1:{port}/hook")
    t0 = time.monotonic()
    [w] = notify(cfg, "start", host="prod", attempts=1, timeout=2)
    assert "webhook (start) failed" in w and time.monotonic() - t0 < 2
    server.delay = 2.0
    cfg = MonitoringConfig(webhook_url=f"{server.url}/slow")
    t0 = time.monotonic()
    [w] = notify(cfg, "success", host="prod", attempts=1, timeout=0.3)
    assert time.monotonic() - t0 < 1.5
    assert "timed out" in w


def test_nothing_configured_and_bad_input_never_raise() -> None:
    assert notify(MonitoringConfig(), "success", host="prod") == []
    [w] = notify(MonitoringConfig(webhook_url="ftp://x/y"), "start", host="prod")
    assert "only http:// and https://" in w
    [w] = notify(MonitoringConfig(), "finished", host="prod")  # type: ignore[arg-type]
    assert "unknown monitoring event" in w
    assert safe_url("https://user:pw@hc-ping.com:8443/abc?x=1") == "https://hc-ping.com:8443/…"


# -- the textfile -------------------------------------------------------------------

T1 = datetime(2026, 1, 2, 2, 20, tzinfo=UTC)
T2 = datetime(2026, 1, 3, 2, 20, tzinfo=UTC)


def values(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, s.labels): s.value for s in parse_textfile(path.read_text())}


def H(host: str) -> tuple[tuple[str, str], ...]:
    return (("host", host),)


def HS(host: str, source: str) -> tuple[tuple[str, str], ...]:
    return (("host", host), ("source", source))


def result(host: str, status: str, finished: datetime) -> SnapshotResult:
    return SnapshotResult(
        host=host,
        id="20260102T021500Z-abcd",
        status=status,
        started="2026-01-02T02:15:00Z",
        finished=finished.isoformat().replace("+00:00", "Z"),
        seconds=300.5,
        sources=[
            SourceResult(name="db", type="postgres", bytes_new=1000, bytes_reused=0),
            SourceResult(
                name="img",
                type="docker-image",
                status="ok" if status == "complete" else "failed",
                bytes_reused=5000,
            ),
        ],
        manifest_key=None,
        storage="/var/backups/vkbackup",
    )


def test_textfile_per_host_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "vkbackup.prom"
    assert write_textfile(path, [result("prod", "complete", T1)]) == []
    v = values(path)
    assert v[("vkbackup_last_success_timestamp_seconds", H("prod"))] == T1.timestamp()
    assert v[("vkbackup_last_run_timestamp_seconds", H("prod"))] == T1.timestamp()
    assert v[("vkbackup_last_status", H("prod"))] == 0
    assert v[("vkbackup_duration_seconds", H("prod"))] == 300.5
    assert v[("vkbackup_bytes_new", H("prod"))] == 1000
    assert v[("vkbackup_bytes_reused", H("prod"))] == 5000
    assert v[("vkbackup_source_bytes", HS("prod", "img"))] == 5000
    assert v[("vkbackup_source_ok", HS("prod", "db"))] == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["vkbackup.prom"]  # no temporary left behind
    text = path.read_text()
    assert "# TYPE vkbackup_last_status gauge" in text
    assert 'vkbackup_source_ok{host="prod",source="db"} 1\n' in text

    # another host: prod's series stay as they were
    write_textfile(path, [RunMetrics.failed("staging", 12.0, finished=T2)])
    v = values(path)
    assert v[("vkbackup_last_status", H("prod"))] == 0
    assert v[("vkbackup_last_status", H("staging"))] == 2
    assert v[("vkbackup_last_success_timestamp_seconds", H("staging"))] == 0  # never

    # prod partial: last success is kept from the earlier run, the rest replaced
    write_textfile(path, [result("prod", "partial", T2)])
    v = values(path)
    assert v[("vkbackup_last_success_timestamp_seconds", H("prod"))] == T1.timestamp()
    assert v[("vkbackup_last_run_timestamp_seconds", H("prod"))] == T2.timestamp()
    assert v[("vkbackup_last_status", H("prod"))] == 1
    assert v[("vkbackup_source_ok", HS("prod", "img"))] == 0

    # prod failed before any source ran: every known source reports not saved
    write_textfile(path, [RunMetrics.failed("prod", 3.0, finished=T2)])
    v = values(path)
    assert v[("vkbackup_source_ok", HS("prod", "db"))] == 0
    assert v[("vkbackup_source_ok", HS("prod", "img"))] == 0
    assert v[("vkbackup_last_success_timestamp_seconds", H("prod"))] == T1.timestamp()
    assert v[("vkbackup_last_status", H("staging"))] == 2


def test_textfile_write_failure_is_a_warning(tmp_path: Path) -> None:
    [w] = write_textfile(tmp_path / "missing-dir" / "x.prom", [RunMetrics.failed("prod", 1)])
    assert "missing-dir/x.prom: could not write the Prometheus textfile" in w


def test_textfile_parse_render_roundtrip() -> None:
    samples = [
        Sample("vkbackup_source_ok", (("host", "a"), ("source", 'we"ird\\name\n')), 1.0),
        Sample("vkbackup_duration_seconds", (("host", "a"),), 0.125),
        Sample("vkbackup_bytes_new", (("host", "a"),), 2.0**60),
    ]
    text = render_textfile(samples)
    back = parse_textfile(text + "garbage line {\n# comment\n")
    assert sorted(back, key=lambda s: s.name) == sorted(samples, key=lambda s: s.name)
    assert RunMetrics.from_result(result("x", "complete", T1)).sources == (
        SourceMetrics("db", 1000, True),
        SourceMetrics("img", 5000, True),
    )
    with pytest.raises(ValueError):
        RunMetrics("x", "weird", T1, 1.0)


def test_report_result_and_error(server: Server, tmp_path: Path) -> None:
    prom = tmp_path / "vkbackup.prom"
    cfg = MonitoringConfig(healthchecks_url=f"{server.url}/{UUID}", textfile=prom)
    assert report_result(cfg, result("prod", "complete", T1)) == []
    partial = result("prod", "partial", T2)
    partial.sources[1].error = "docker save failed: no such image"
    assert report_result(cfg, partial) == []
    assert report_error(cfg, "prod", LockError("host prod: another snapshot is running"), 2) == []
    ok, part, err = server.requests
    assert ok.path == f"/{UUID}" and b"status=complete" in ok.body and b"sources_ok=2" in ok.body
    assert part.path == f"/{UUID}/fail"
    assert part.body.decode() == (
        "snapshot 20260102T021500Z-abcd of prod is partial: img: docker save failed: no such image"
    )
    assert err.path == f"/{UUID}/fail"
    assert err.body.decode() == "snapshot of prod failed: host prod: another snapshot is running"
    v = values(prom)
    assert v[("vkbackup_last_status", H("prod"))] == 2
    assert v[("vkbackup_last_success_timestamp_seconds", H("prod"))] == T1.timestamp()
    # monitoring never fails the run: a dead endpoint is only a warning
    server.status = 503
    warnings = report_error(cfg, "prod", KeyboardInterrupt(), 1)
    assert len(warnings) == 1 and "HTTP 503" in warnings[0]
    assert server.requests[-1].body == b"snapshot of prod failed: KeyboardInterrupt"
