"""`vkbackup check` as a user runs it (a real process, a config file, real
snapshots in a local storage): it fails naming the stale host and what is
stale, and passes once there is a snapshot, a verify and a drill; verify and
prune report to the webhook, and the Prometheus textfile carries the ages."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.lifecycle.conftest import LifecycleEnv
from tests.integration.lifecycle.test_cli import run
from vkbackup.actions.drill import record
from vkbackup.common import iso, utcnow
from vkbackup.monitoring import parse_textfile


@pytest.fixture
def hooks() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A webhook endpoint on 127.0.0.1: its URL and the documents it received."""
    docs: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            docs.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook/{{job}}", docs
    finally:
        httpd.shutdown()
        httpd.server_close()


def ages(prom: Path) -> dict[str, float]:
    return {
        s.name.removeprefix("vkbackup_last_").removesuffix("_age_seconds"): s.value
        for s in parse_textfile(prom.read_text())
        if s.name.endswith("_age_seconds") and s.label("host") == "box"
    }


def test_check_fails_on_a_stale_host_and_passes_after_snapshot_verify_and_drill(
    env: LifecycleEnv, hooks: tuple[str, list[dict[str, object]]]
) -> None:
    hook_url, docs = hooks
    prom = env.root / "vkbackup.prom"
    with env.config_path.open("a") as f:
        f.write(f'\n[monitoring]\nwebhook_url = "{hook_url}"\ntextfile = "{prom}"\n')

    # no storage directory: that is no "none on record", it is storage missing (exit 10)
    r = run(env, "check")
    assert r.returncode == 10 and str(env.storage.root) in r.stderr

    # an empty storage, no snapshot at all: every kind is stale, each named with the host
    env.storage.root.mkdir()
    r = run(env, "check")
    assert r.returncode == 1, r.stderr
    assert "host box: newest complete snapshot: none on record (limit 26h)" in r.stderr
    assert "host box: newest passing verify: none on record (limit 8d)" in r.stderr
    assert "host box: newest successful drill: none on record (limit 100d)" in r.stderr
    assert "hint: vkbackup snapshot box;" in r.stderr and "Traceback" not in r.stderr
    assert [ln.split()[-1] for ln in r.stdout.splitlines()[1:]] == ["STALE"] * 3
    assert ages(prom) == {"snapshot": float("inf"), "verify": float("inf"), "drill": float("inf")}

    # a snapshot: the snapshot is fresh, verify and drill still stale
    snap = env.snap()
    r = run(env, "check", "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["format"] == "vkbackup-check/1" and doc["ok"] is False
    [box] = doc["hosts"]
    assert [(c["kind"], c["stale"]) for c in box["checks"]] == [
        ("snapshot", False),
        ("verify", True),
        ("drill", True),
    ]
    assert box["checks"][0]["ref"] == snap.id
    assert "newest complete snapshot" not in r.stderr
    assert "host box: newest passing verify: none on record" in r.stderr

    # verify through the CLI: it reports to the webhook as job "verify"
    v = run(env, "verify", "--latest")
    assert v.returncode == 0, v.stderr
    events = [(d["job"], d["event"], d["host"]) for d in docs]
    assert events == [("verify", "start", "box"), ("verify", "success", "box")]
    summary = docs[1]["summary"]
    assert isinstance(summary, dict) and summary.pop("bytes") > 0
    assert summary == {
        "status": "ok",
        "snapshots": 1,
        "latest": snap.id,
        "objects": 1,
        "bad": 0,
        "mode": "full",
    }
    seen = ages(prom)
    assert seen["drill"] == float("inf") and seen["verify"] < 600 and seen["snapshot"] < 600

    # a drill that passed (a real drill needs a scratch host over SSH: tests/e2e)
    started = utcnow() - timedelta(days=3)
    record(env.storage, {"host": "box", "started": iso(started), "status": "ok"})
    r = run(env, "check")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["HOST", "CHECK", "NEWEST", "AGE", "LIMIT", "STATUS"]
    assert [ln.split()[0] for ln in lines[1:]] == ["box"] * 3
    assert [ln.split()[-1] for ln in lines[1:]] == ["ok"] * 3
    assert f"newest successful drill   {iso(started)}  3d" in r.stdout
    assert 3 * 86400 <= ages(prom)["drill"] < 3 * 86400 + 600

    # prune reports too; the newest complete snapshot is kept, so check still passes
    docs.clear()
    p = run(env, "prune")
    assert p.returncode == 0, p.stderr
    assert [(d["job"], d["event"]) for d in docs] == [("prune", "start"), ("prune", "success")]
    assert run(env, "-q", "check").returncode == 0

    # a newly configured host with no snapshot is stale, box stays fresh
    with env.config_path.open("a") as f:
        f.write('\n[hosts.ghost]\naddress = "127.0.0.2"\n')
    r = run(env, "check")
    assert r.returncode == 1
    assert "host ghost: newest complete snapshot: none on record (limit 26h)" in r.stderr
    assert "host box" not in r.stderr
    assert run(env, "check", "--host", "box").returncode == 0


def test_check_limits_from_options_and_their_errors(env: LifecycleEnv) -> None:
    env.snap()
    r = run(env, "check", "--max-age", "26", "--json")
    assert r.returncode == 2
    assert "--max-age: '26' is not a duration" in r.stderr and r.stdout == ""
    with env.config_path.open("a") as f:
        f.write('\n[check]\nmax_verify_age = "eight days"\n')
    r = run(env, "check")
    assert r.returncode == 2
    assert f"{env.config_path}: check.max_verify_age: 'eight days' is not a duration" in r.stderr
