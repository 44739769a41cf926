"""Shell texts sent to a restore target, and the parsing of what they print."""

from __future__ import annotations

from vkbackup.restore.target import compose_name_clashes, parse_compose_versions


def test_compose_versions_parsed_into_flavours() -> None:
    assert parse_compose_versions("plugin 2.26.1\nstandalone 2.26.1\n") == {"v2": "docker compose"}
    assert parse_compose_versions("standalone 1.29.2\n") == {"v1": "docker-compose"}
    assert parse_compose_versions("plugin v2.29.7\nstandalone 1.29.2\n") == {
        "v2": "docker compose",
        "v1": "docker-compose",
    }
    assert parse_compose_versions("") == {}
    assert parse_compose_versions("standalone docker-compose: not found\n") == {}


def test_a_compose_that_would_rename_containers_is_named() -> None:
    names = [
        ("chatwoot-chatwoot-1", "chatwoot", "chatwoot"),  # v2's own name
        ("chatwoot-chatwoot-sidekiq-1", "chatwoot", "chatwoot-sidekiq"),
        ("platform-api", "platform-api", "platform-api"),  # container_name: any flavour
    ]
    assert compose_name_clashes("v2", names) == []
    assert compose_name_clashes("v1", names) == [
        "chatwoot-chatwoot-1 (would be chatwoot_chatwoot_1)",
        "chatwoot-chatwoot-sidekiq-1 (would be chatwoot_chatwoot-sidekiq_1)",
    ]
    assert compose_name_clashes("v2", [("app_web_2", "app", "web")]) == [
        "app_web_2 (would be app-web-2)"
    ]


def test_compose_up_runs_in_the_project_directory_and_can_leave_dependencies() -> None:
    from vkbackup.restore.target import compose_up_argv

    files = ["/opt/chat wood/docker-compose.yml"]
    argv = compose_up_argv(
        ["docker", "compose"], "/opt/chat wood", "chatwoot", files, ["postgres"], no_deps=True
    )
    script = argv[-1].split("\n")[-1]  # after the pipeline's set -euo pipefail
    assert script.startswith("cd '/opt/chat wood' && docker compose -p chatwoot -f ")
    assert script.endswith("up -d --no-build --no-deps postgres 2>&1")
    plain = compose_up_argv(["docker-compose"], "/opt/x", "x", [], ["a", "b"])[-1].split("\n")[-1]
    assert "--no-deps" not in plain and plain.endswith("up -d --no-build a b 2>&1")
