"""Hooks around `run_snapshot`, over a fake host that records every command in
order (tests/unit/hookfakes.py): a stand-in volume source whose stream stops
and starts its containers, real encryption and a local storage directory.

* before_snapshot fails: the host saw the before hooks and nothing else; no
  lock, no object, no snapshot; on_failure ran with the error.
* every command's place: before -> facts -> the source's stream (ended, so its
  containers are running again) -> after.
* after_snapshot fails: every after hook still ran; the run is partial, the
  manifest stays complete and listed.
* a source fails, or the run raises: the after hooks run all the same.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.hookfakes import Answer, Host
from vkbackup import catalog, facts, layout
from vkbackup.actions import snapshot as snapshot_action
from vkbackup.actions.snapshot import run_problem, run_snapshot
from vkbackup.config import parse_config
from vkbackup.config.model import Config, SourceConfig
from vkbackup.crypto import generate_identity
from vkbackup.errors import HookError, SnapshotError
from vkbackup.sources import PlanContext, SourcePlan, StreamPlan
from vkbackup.storage.local import LocalStorage
from vkbackup.transport.base import Transport

STREAM = ["volume-stream", "app_data"]  # stands for: stop app; tar; start app (trap)


class FakeVolume:
    type = "docker-volume"

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg

    def plan(self, t: Transport, ctx: PlanContext) -> SourcePlan:
        return SourcePlan(streams=[StreamPlan(name="volume-0.tar", role="tar", argv=STREAM)])

    def after_stream(self, t: Transport, stream: StreamPlan, plan: SourcePlan, tail: str) -> None:
        return None


@pytest.fixture(autouse=True)
def fake_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_action, "make_source", FakeVolume)

    def gather(t: Transport) -> dict[str, Any]:
        t.run(["facts"])
        return {"tools": ["gzip"]}

    monkeypatch.setattr(facts, "gather", gather)


def make_cfg(tmp: Path, hooks: dict[str, Any], compression: str = "auto") -> Config:
    on_failure = dump_env_command(tmp / "failure.env")
    doc = {
        "storage": {"type": "local", "path": str(tmp / "store")},
        "encryption": {"recipients": [str(generate_identity().recipient())]},
        "snapshot": {"compression": compression},
        "hosts": {
            "prod": {
                "address": "prod.test",
                "sources": [{"type": "docker-volume", "name": "app", "volume": "app_data"}],
                "hooks": {"on_failure": [on_failure], **hooks},
            }
        },
    }
    return parse_config(doc, "test.toml")


def dump_env_command(out: Path) -> str:
    """An on_failure command that writes its VKBACKUP_* variables to *out* as JSON."""
    code = (
        "import json, os, sys; json.dump({k: v for k, v in os.environ.items() "
        "if k.startswith('VKBACKUP_')}, open(sys.argv[1], 'w'))"
    )
    return shlex.join([sys.executable, "-c", code, str(out)])


def failure_env(tmp: Path) -> dict[str, str] | None:
    path = tmp / "failure.env"
    if not path.exists():
        return None
    doc: dict[str, str] = json.loads(path.read_text())
    return doc


def stream_ok(argv: list[str]) -> Answer:
    return 0, b"tar bytes", ""


def test_failing_before_hook_stops_everything(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path,
        {
            "before_snapshot": ["maintenance on", "check disk", "never reached"],
            "after_snapshot": ["maintenance off"],
        },
    )
    host = Host(script={"check disk": (1, b"", "disk 99% full\n")}, streams=stream_ok)
    storage = LocalStorage(cfg.storage.path)
    with pytest.raises(HookError) as exc:
        run_snapshot(cfg, "prod", storage=storage, connect=host.connect)
    # exactly these commands, in this order: nothing stopped, no facts, no after hooks
    assert host.seen == ["hook: maintenance on", "hook: check disk"]
    msg = str(exc.value)
    assert "prod: hook hosts.prod.hooks.before_snapshot[1] exited with status 1" in msg
    assert "disk 99% full" in msg
    assert storage.head(layout.lock_key("prod")) is None
    assert catalog.list_snapshots(storage, "prod") == []
    assert [i.key for i in storage.list("")] == []
    env = failure_env(tmp_path)
    assert env is not None
    assert env["VKBACKUP_HOST"] == "prod" and env["VKBACKUP_COMMAND"] == "snapshot"
    assert env["VKBACKUP_STATUS"] == "failed"
    assert env["VKBACKUP_ERROR"].startswith("prod: hook hosts.prod.hooks.before_snapshot[1]")
    assert "disk 99% full" in env["VKBACKUP_ERROR"]
    assert "VKBACKUP_SNAPSHOT" not in env


def test_hooks_bracket_the_sources(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path, {"before_snapshot": ["maintenance on"], "after_snapshot": ["maintenance off"]}
    )
    host = Host(streams=stream_ok)
    storage = LocalStorage(cfg.storage.path)
    r = run_snapshot(cfg, "prod", storage=storage, connect=host.connect)
    assert r.status == "complete" and r.hook_errors == []
    assert host.seen == [
        "hook: maintenance on",
        "run: facts",
        "start: volume-stream app_data",
        "ended: volume-stream app_data",  # the stream's trap started the containers
        "hook: maintenance off",
    ]
    assert failure_env(tmp_path) is None  # ok: on_failure does not run


def test_failing_after_hook_makes_the_run_partial_not_the_snapshot(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, {"after_snapshot": ["maintenance off", "notify"]})
    host = Host(script={"maintenance off": (1, b"", "rails: not running\n")}, streams=stream_ok)
    storage = LocalStorage(cfg.storage.path)
    r = run_snapshot(cfg, "prod", storage=storage, connect=host.connect)
    assert host.hooks == ["maintenance off", "notify"]  # the second ran too
    assert r.status == "partial" and r.manifest_key is not None
    assert len(r.hook_errors) == 1
    assert "hosts.prod.hooks.after_snapshot[0] exited with status 1" in r.hook_errors[0]
    assert r.to_json()["hook_errors"] == r.hook_errors
    # the snapshot is listed, complete: its data is whole
    m = catalog.load_manifest(storage, "prod", r.id)
    assert m.status == "complete"
    assert [sid for _, sid in catalog.list_snapshots(storage, "prod")] == [r.id]
    assert storage.head(layout.lock_key("prod")) is None
    env = failure_env(tmp_path)
    assert env is not None and env["VKBACKUP_STATUS"] == "partial"
    assert env["VKBACKUP_SNAPSHOT"] == r.id
    assert "after_snapshot[0]" in env["VKBACKUP_ERROR"]


def test_after_hooks_run_when_the_source_failed(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path, {"before_snapshot": ["maintenance on"], "after_snapshot": ["maintenance off"]}
    )
    host = Host(streams=lambda argv: (2, b"", "tar: app_data: Cannot open\n"))
    storage = LocalStorage(cfg.storage.path)
    r = run_snapshot(cfg, "prod", storage=storage, connect=host.connect)
    assert r.status == "failed" and r.manifest_key is None
    assert host.seen[-2:] == ["ended: volume-stream app_data", "hook: maintenance off"]
    env = failure_env(tmp_path)
    assert env is not None and env["VKBACKUP_STATUS"] == "failed"
    assert "source app" in env["VKBACKUP_ERROR"] and "VKBACKUP_SNAPSHOT" not in env


def test_after_hooks_run_when_the_run_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def gather(t: Transport) -> dict[str, Any]:
        t.run(["facts"])
        return {"tools": ["tar"]}  # no gzip: compression = "gzip" cannot run

    monkeypatch.setattr(facts, "gather", gather)
    cfg = make_cfg(tmp_path, {"after_snapshot": ["maintenance off"]}, compression="gzip")
    host = Host(streams=stream_ok)
    storage = LocalStorage(cfg.storage.path)
    with pytest.raises(SnapshotError, match="gzip is not installed"):
        run_snapshot(cfg, "prod", storage=storage, connect=host.connect)
    assert host.seen == ["run: facts", "hook: maintenance off"]
    assert storage.head(layout.lock_key("prod")) is None
    env = failure_env(tmp_path)
    assert env is not None and "gzip is not installed" in env["VKBACKUP_ERROR"]


def test_no_hooks_change_nothing(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, {})
    host = Host(streams=stream_ok)
    r = run_snapshot(cfg, "prod", storage=LocalStorage(cfg.storage.path), connect=host.connect)
    assert r.status == "complete"
    assert host.hooks == []


def test_run_problem() -> None:
    from vkbackup.actions.snapshot import SnapshotResult, SourceResult

    def result(status: str, *sources: SourceResult, hooks: tuple[str, ...] = ()) -> Any:
        return SnapshotResult(
            "prod", "S", status, "", "", 0.0, list(sources), None, "x", list(hooks)
        )

    ok = SourceResult("a", "files")
    bad = SourceResult("b", "files", status="failed", error="boom")
    assert run_problem(result("complete", ok)) is None
    assert run_problem(result("partial", ok)) is None  # --only: skipped sources are not lost
    assert run_problem(result("partial", ok, bad)) == "source b: boom"
    assert run_problem(result("partial", ok, hooks=("hook x failed",))) == "hook x failed"
    assert json.dumps(run_problem(result("failed"))) == '"no source could be saved"'
