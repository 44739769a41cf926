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


def test_containers_are_found_by_compose_project_and_service() -> None:
    """Health looks a compose container up by what it is (project/service), so a
    replica that runs under another name still counts, and a service with no
    container fails naming the name it had on prod."""
    from vkbackup.restore.steps import ComposeName

    out = (
        "/chatwoot-chatwoot-1 true healthy chatwoot chatwoot\n"
        "/platform-api true none platform-api platform-api\n"
        "/hand-made true none - -\n"
    )
    seen, _ = parse_health_probe(out)
    assert seen["chatwoot/chatwoot"] == ("true", "healthy")
    assert seen["hand-made"] == ("true", "none") and "-/-" not in seen
    services = [
        ComposeName("chatwoot-chatwoot-1", "chatwoot", "chatwoot"),
        ComposeName("chatwoot-chatwoot-sidekiq-1", "chatwoot", "chatwoot-sidekiq"),
    ]
    bad = health_problems(
        ["chatwoot-chatwoot-1", "chatwoot-chatwoot-sidekiq-1", "platform-api"],
        ["chatwoot-chatwoot-1"],
        [],
        seen,
        {},
        services,
    )
    assert bad == ["chatwoot-chatwoot-sidekiq-1 not running"]


def test_https_check_resolves_to_the_target_and_verifies_the_ca() -> None:
    """The https check runs curl with the name resolved to the target itself and the
    CA given; a refused port answers with curl's error, not a pass."""
    argv = health_probe_argv(
        [],
        ["https://api.visualkit.live:9/health"],
        {"https://api.visualkit.live:9/health": "/x/root.crt"},
    )
    assert "--resolve" in argv[2] and "/x/root.crt" in argv[2] and " -k" not in argv[2]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0
    _, answers = parse_health_probe(cp.stdout)
    line = answers["https://api.visualkit.live:9/health"]
    assert not line.startswith("HTTP/"), line
