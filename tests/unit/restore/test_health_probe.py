"""The restore's health step: one command per round, parsed into what is not healthy."""

from __future__ import annotations

import subprocess

from vkbackup.restore.runner import health_problems
from vkbackup.restore.steps import HttpCheckParams
from vkbackup.restore.target import health_probe_argv, parse_health_probe

HTTP = [
    HttpCheckParams(name="api", url="http://127.0.0.1:8080/health", expect_status=200),
    HttpCheckParams(name="support", url="http://127.0.0.1:3000/", expect_status=200),
]


def test_probe_output_parsed_per_container_and_url() -> None:
    out = (
        "/caddy true none\n/chatwoot-postgres-1 true healthy\n/janus true starting\n"
        "== http://127.0.0.1:8080/health\nHTTP/1.1 200 OK\n"
        "== http://127.0.0.1:3000/\n"
    )
    seen, answers = parse_health_probe(out)
    assert seen["chatwoot-postgres-1"] == ("true", "healthy")
    assert answers == {
        "http://127.0.0.1:8080/health": "HTTP/1.1 200 OK",
        "http://127.0.0.1:3000/": "",
    }
    bad = health_problems(
        ["caddy", "chatwoot-postgres-1", "janus", "vk-agent"],
        ["chatwoot-postgres-1", "janus"],
        HTTP,
        seen,
        answers,
    )
    assert bad == [
        "janus starting",
        "vk-agent not running",
        "support (http://127.0.0.1:3000/): no answer",
    ]
    healthy = dict(seen, janus=("true", "healthy"), **{"vk-agent": ("true", "none")})
    answers["http://127.0.0.1:3000/"] = "HTTP/1.0 200 OK"
    assert health_problems(["janus", "vk-agent"], ["janus"], HTTP, healthy, answers) == []


def test_probe_runs_in_bash_and_reports_a_refused_port() -> None:
    """The real command, run here: no docker needed for the HTTP half, a closed port
    answers nothing (and the round still ends)."""
    argv = health_probe_argv([], ["http://127.0.0.1:9/x"])
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0
    _, answers = parse_health_probe(cp.stdout)
    assert answers == {"http://127.0.0.1:9/x": ""}
