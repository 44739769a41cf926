"""vkbackup.hooks: the pure ordering and argv, and the runner over a fake host
(before stops at the first failure, after runs every command, errors name the
hook, output is logged masked, on_failure gets the failure in its environment)."""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.unit.hookfakes import Host
from vkbackup.config.model import HooksConfig
from vkbackup.errors import HookError
from vkbackup.hooks import (
    HookRunner,
    LocalResult,
    failure_env,
    plan_hooks,
    remote_argv,
    run_local_command,
    tail_lines,
)
from vkbackup.logs import register_secret, setup_logging

HOOKS = HooksConfig(
    before_snapshot=("maintenance on", "flush caches"),
    after_snapshot=("maintenance off", "notify done"),
    before_restore=("prepare",),
    after_restore=("warm cache",),
    on_failure=("page oncall",),
    timeout=60,
)


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """What vkbackup's own log handler (secret masking included) prints, at info."""
    root = logging.getLogger("vkbackup")
    saved = (list(root.handlers), root.level, root.propagate)
    buf = io.StringIO()
    setup_logging(0, stream=buf)
    try:
        yield buf
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        root.propagate = saved[2]


def test_plan_orders_each_verb_and_names_key_paths() -> None:
    p = plan_hooks("prod", HOOKS, "snapshot")
    assert [h.command for h in p.before] == ["maintenance on", "flush caches"]
    assert [h.command for h in p.after] == ["maintenance off", "notify done"]
    assert [h.where for h in p.before] == [
        "hosts.prod.hooks.before_snapshot[0]",
        "hosts.prod.hooks.before_snapshot[1]",
    ]
    assert p.on_failure[0].where == "hosts.prod.hooks.on_failure[0]"
    r = plan_hooks("prod", HOOKS, "restore")
    assert [h.where for h in r.before + r.after] == [
        "hosts.prod.hooks.before_restore[0]",
        "hosts.prod.hooks.after_restore[0]",
    ]
    with pytest.raises(ValueError):
        plan_hooks("prod", HOOKS, "verify")


def test_remote_argv_is_bash_under_the_hosts_own_timeout() -> None:
    assert remote_argv("echo $HOME | tee x", 600) == [
        "timeout", "-k", "10", "600s", "bash", "-c", "echo $HOME | tee x",
    ]  # fmt: skip
    assert remote_argv("x", 0.2)[3] == "1s"


def test_failure_env_masks_and_cuts_the_error() -> None:
    register_secret("hunter2-secret-value")
    env = failure_env("prod", "snapshot", "failed", "boom: hunter2-secret-value\x00", "S1")
    assert env == {
        "VKBACKUP_HOST": "prod",
        "VKBACKUP_COMMAND": "snapshot",
        "VKBACKUP_STATUS": "failed",
        "VKBACKUP_ERROR": "boom: ***",
        "VKBACKUP_SNAPSHOT": "S1",
    }
    env = failure_env("prod", "restore", "partial", "x" * 10000, target="root@n:22")
    assert "VKBACKUP_SNAPSHOT" not in env and env["VKBACKUP_TARGET"] == "root@n:22"
    assert len(env["VKBACKUP_ERROR"]) == 4000


def test_tail_lines_keeps_the_end_and_escapes_controls() -> None:
    out = "".join(f"line {i}\n" for i in range(50)) + "\x1b[2Jcleared\n"
    lines = tail_lines(out.encode())
    assert len(lines) == 20 and lines[0] == "line 31" and lines[-1] == "\\x1b[2Jcleared"


def test_before_stops_at_the_first_failure_and_names_it() -> None:
    host = Host(script={"flush caches": (1, b"", "redis: connection refused\n")})
    runner = HookRunner("prod", HOOKS, "snapshot")
    with pytest.raises(HookError) as exc:
        runner.before(host.connect())
    assert host.seen == ["hook: maintenance on", "hook: flush caches"]
    msg = str(exc.value)
    assert msg.startswith("prod: hook hosts.prod.hooks.before_snapshot[1] exited with status 1")
    assert "root@prod.test:22" in msg and "redis: connection refused" in msg
    assert exc.value.where == "hosts.prod.hooks.before_snapshot[1]"
    assert exc.value.exit_status == 1
    assert exc.value.hint is not None and "nothing was stopped or written" in exc.value.hint
    assert int(exc.value.exit_code) == 1
    # the connection waits past the host's own timeout
    assert host.timeouts == [60 + 10 + 30, 60 + 10 + 30]


def test_after_runs_every_command_and_returns_the_failures() -> None:
    host = Host(script={"maintenance off": (2, b"", "no such container\n")})
    errors = HookRunner("prod", HOOKS, "snapshot").after(host.connect())
    assert host.seen == ["hook: maintenance off", "hook: notify done"]
    assert len(errors) == 1 and errors[0].where == "hosts.prod.hooks.after_snapshot[0]"
    assert "exited with status 2" in str(errors[0]) and "no such container" in str(errors[0])


def test_status_124_says_timeout() -> None:
    host = Host(script={"prepare": (124, b"", "")})
    with pytest.raises(HookError) as exc:
        HookRunner("prod", HOOKS, "restore").before(host.connect())
    assert "hooks.timeout, 60s" in str(exc.value)
    assert "nothing was written on the target" in (exc.value.hint or "")


def test_output_is_logged_at_info_and_masked(logged: io.StringIO) -> None:
    register_secret("tok-9f8e7d6c5b4a")
    host = Host(script={"maintenance on": (0, b"enabled with tok-9f8e7d6c5b4a\n", "warn: slow\n")})
    hooks = HooksConfig(before_snapshot=("maintenance on",))
    HookRunner("prod", hooks, "snapshot").before(host.connect())
    text = logged.getvalue()
    assert "enabled with ***" in text and "tok-9f8e7d6c5b4a" not in text
    assert "stderr" in text and "warn: slow" in text
    assert "hook hosts.prod.hooks.before_snapshot[0]: ok in" in text
    # the command text only at debug (-v): it may carry a token
    assert "maintenance on" not in text


def test_on_failure_gets_the_failure_in_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VKBACKUP_PASSPHRASE", "do-not-pass-me")
    monkeypatch.setenv("MY_KEY_PASS", "nor-me")
    monkeypatch.setenv("KEEP_ME", "yes")
    calls: list[tuple[list[str], dict[str, str], float]] = []

    def fake(argv: list[str], env: Mapping[str, str], timeout: float) -> LocalResult:
        calls.append((argv, dict(env), timeout))
        return LocalResult(1, b"", b"pager down\n")  # its failure is only a warning

    hooks = HooksConfig(on_failure=("page oncall", "log it"), timeout=30)
    runner = HookRunner("prod", hooks, "snapshot", run_local=fake, drop_env=("MY_KEY_PASS",))
    runner.on_failure("partial", "source db: pg_dump failed", snapshot="20260101T000000Z-ab12")
    assert [c[0] for c in calls] == [["bash", "-c", "page oncall"], ["bash", "-c", "log it"]]
    env = calls[0][1]
    assert env["VKBACKUP_HOST"] == "prod" and env["VKBACKUP_COMMAND"] == "snapshot"
    assert env["VKBACKUP_STATUS"] == "partial"
    assert env["VKBACKUP_ERROR"] == "source db: pg_dump failed"
    assert env["VKBACKUP_SNAPSHOT"] == "20260101T000000Z-ab12"
    assert env["KEEP_ME"] == "yes"
    assert "VKBACKUP_PASSPHRASE" not in env and "MY_KEY_PASS" not in env
    assert calls[0][2] == 30


def test_no_hooks_run_nothing() -> None:
    host = Host()
    runner = HookRunner("prod", HooksConfig(), "snapshot", run_local=lambda *a: pytest.fail())
    runner.before(host.connect())
    assert runner.after(host.connect()) == [] and not runner.has_after
    runner.on_failure("failed", "x")
    assert host.seen == []


def test_run_local_command_kills_the_group_at_the_timeout(tmp_path: Path) -> None:
    env = dict(os.environ)
    t0 = time.monotonic()
    res = run_local_command(["bash", "-c", "sleep 30 & sleep 30; echo never"], env, 0.5)
    assert res.timed_out and res.status != 0 and time.monotonic() - t0 < 10
    ok = run_local_command(["bash", "-c", 'echo "$X"; echo e >&2'], {**env, "X": "1"}, 10)
    assert ok == LocalResult(0, b"1\n", b"e\n")
