"""Hooks around `run_restore`, on a fake target that records every command in
order (tests/unit/hookfakes.py). The plan's run is a stand-in that reads the
resume state and writes like the real one, so "nothing written" is visible as
commands the target never saw.

* before_restore fails: the target saw the before hooks and nothing else; the
  report is failed with the HookError; on_failure ran with the error.
* after_restore fails: every after hook ran; an ok restore becomes partial
  (PartialFailure, exit 3), its RTO kept.
* the plan fails: the after hooks run all the same.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.hookfakes import Host
from vkbackup.actions.restore import restore_hooks
from vkbackup.config import parse_config
from vkbackup.config.model import HooksConfig, HostConfig
from vkbackup.errors import HookError, PartialFailure, RestoreError
from vkbackup.manifest import Manifest
from vkbackup.restore import session
from vkbackup.restore.plan import Plan
from vkbackup.restore.runner import Failure, Run, StepResult
from vkbackup.restore.steps import PreflightParams, Step, StepContext
from vkbackup.storage.local import LocalStorage
from vkbackup.transport.base import Transport

SID = "20260101T020000Z-ab12"
TARGET = HostConfig(name="new", address="203.0.113.9", key_passphrase_env="NEW_KEY_PASS")
PREFLIGHT = Step("preflight", "preflight", PreflightParams())


def fake_plan(fail: bool) -> Callable[..., Failure | None]:
    def run_plan(
        run: Run,
        ctx: StepContext,
        connect: Callable[[], Transport],
        results: list[StepResult],
        now: Callable[[], str],
    ) -> Failure | None:
        ctx.t.run(["cat", f"/var/lib/vkbackup/restore/{SID}.json"])  # the resume state
        ctx.t.run(["preflight"])
        ctx.t.run(["write-state"])
        if fail:
            res = StepResult("files:app", "files", "put files", "failed", 0.1, "tar failed")
            results.append(res)
            return Failure(PREFLIGHT, res, RestoreError("tar failed"))
        results.append(StepResult("preflight", "preflight", "preflight", "done", 0.1))
        return None

    return run_plan


@pytest.fixture(autouse=True)
def no_storage_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "plain_checks", lambda *a: ({}, []))


def dump_env(out: Path) -> str:
    code = (
        "import json, os, sys; json.dump({k: v for k, v in os.environ.items() "
        "if k.startswith('VKBACKUP_')}, open(sys.argv[1], 'w'))"
    )
    return shlex.join([sys.executable, "-c", code, str(out)])


def restore(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, host: Host, hooks: dict[str, Any], *, fail: bool
) -> session.RestoreReport:
    monkeypatch.setattr(session, "run_plan", fake_plan(fail))
    cfg = HooksConfig(on_failure=(dump_env(tmp / "failure.json"),), **hooks)
    manifest = Manifest(
        SID, "prod", "2026-01-01T02:00:00Z", "2026-01-01T02:01:00Z", "x", "complete"
    )
    plan = Plan(SID, "prod", "derived", [PREFLIGHT])
    return session.run_restore(
        plan,
        manifest,
        TARGET,
        storage=LocalStorage(tmp / "store"),
        connect=host.connect,
        identities=[],
        hooks=cfg,
    )


def failure_env(tmp: Path) -> dict[str, str] | None:
    path = tmp / "failure.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_failing_before_hook_writes_nothing_on_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host(script={"stop old app": (3, b"", "compose: no such project\n")})
    hooks = {
        "before_restore": ["check space", "stop old app", "never reached"],
        "after_restore": ["warm cache"],
    }
    report = restore(tmp_path, monkeypatch, host, hooks, fail=False)
    assert host.seen == ["hook: check space", "hook: stop old app"]
    assert report.status == "failed" and isinstance(report.exception, HookError)
    assert report.error is not None
    assert "prod: hook hosts.prod.hooks.before_restore[1] exited with status 3" in report.error
    assert "compose: no such project" in report.error and "(on root@prod.test:22)" in report.error
    assert report.steps == []
    env = failure_env(tmp_path)
    assert env is not None
    assert env["VKBACKUP_COMMAND"] == "restore" and env["VKBACKUP_STATUS"] == "failed"
    assert env["VKBACKUP_HOST"] == "prod" and env["VKBACKUP_SNAPSHOT"] == SID
    assert env["VKBACKUP_TARGET"] == "root@203.0.113.9:22"
    assert "before_restore[1]" in env["VKBACKUP_ERROR"]


def test_hooks_bracket_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = Host()
    hooks = {"before_restore": ["check space"], "after_restore": ["warm cache"]}
    report = restore(tmp_path, monkeypatch, host, hooks, fail=False)
    assert report.status == "ok" and report.exception is None
    assert host.seen == [
        "hook: check space",
        f"run: cat /var/lib/vkbackup/restore/{SID}.json",
        "run: preflight",
        "run: write-state",
        "hook: warm cache",
    ]
    assert host.connections == 2  # the after hooks on a new connection
    assert failure_env(tmp_path) is None


def test_failing_after_hook_makes_the_restore_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host(script={"warm cache": (1, b"", "curl: (7) refused\n")})
    hooks = {"after_restore": ["warm cache", "announce"]}
    report = restore(tmp_path, monkeypatch, host, hooks, fail=False)
    assert host.hooks == ["warm cache", "announce"]
    assert report.status == "partial"
    assert isinstance(report.exception, PartialFailure) and int(report.exception.exit_code) == 3
    assert report.error is not None and "after_restore[0]" in report.error
    assert "curl: (7) refused" in report.hook_errors[0]
    assert report.to_json()["hook_errors"] == report.hook_errors
    assert report.rto_seconds > 0
    env = failure_env(tmp_path)
    assert env is not None and env["VKBACKUP_STATUS"] == "partial"


def test_after_hooks_run_when_the_plan_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host()
    hooks = {"before_restore": ["check space"], "after_restore": ["warm cache"]}
    report = restore(tmp_path, monkeypatch, host, hooks, fail=True)
    assert report.status == "failed" and isinstance(report.exception, RestoreError)
    assert host.seen[-1] == "hook: warm cache"
    env = failure_env(tmp_path)
    assert env is not None and env["VKBACKUP_STATUS"] == "failed"
    assert "tar failed" in env["VKBACKUP_ERROR"]


def test_restore_hooks_are_the_snapshot_hosts() -> None:
    cfg = parse_config(
        {
            "hosts": {
                "prod": {"address": "a", "hooks": {"after_restore": ["warm"]}},
                "new": {"address": "b", "hooks": {"after_restore": ["not these"]}},
            }
        },
        "t.toml",
    )
    hooks = restore_hooks(cfg, "prod")
    assert hooks is not None and hooks.after_restore == ("warm",)
    assert restore_hooks(cfg, "gone") is None
