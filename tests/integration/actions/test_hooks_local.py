"""Snapshot hooks through the real pipeline on this machine: LocalTransport (bash,
coreutils' timeout, tar, gzip) -> age -> local storage -> manifest. The hooks
are real commands; they look at the storage directory to show where they run
relative to the lock and the manifest.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vkbackup import catalog, layout
from vkbackup.actions.snapshot import run_snapshot
from vkbackup.config import parse_config
from vkbackup.config.model import Config, HostConfig
from vkbackup.crypto import generate_identity
from vkbackup.errors import HookError
from vkbackup.logs import register_secret, setup_logging
from vkbackup.storage.local import LocalStorage
from vkbackup.transport.local import LocalTransport


def local(_: HostConfig) -> LocalTransport:
    return LocalTransport("local")


def dump_env(out: Path) -> str:
    """An on_failure command writing its VKBACKUP_* variables to *out* as JSON."""
    code = (
        "import json, os, sys; json.dump({k: v for k, v in os.environ.items() "
        "if k.startswith('VKBACKUP_')}, open(sys.argv[1], 'w'))"
    )
    return shlex.join([sys.executable, "-c", code, str(out)])


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "app.conf").write_text("a = 1\n")
    return d


def make_cfg(tmp: Path, tree: Path, hooks: dict[str, object]) -> Config:
    doc = {
        "storage": {"type": "local", "path": str(tmp / "store")},
        "encryption": {"recipients": [str(generate_identity().recipient())]},
        "hosts": {
            "box": {
                "address": "127.0.0.1",
                "sources": [{"type": "files", "name": "etc", "paths": [str(tree / "*")]}],
                "hooks": {"on_failure": [dump_env(tmp / "failure.json")], **hooks},
            }
        },
    }
    return parse_config(doc, "test.toml")


def failure_env(tmp: Path) -> dict[str, str] | None:
    path = tmp / "failure.json"
    return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
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


def test_failing_before_hook_leaves_no_snapshot_and_no_lock(tmp_path: Path, tree: Path) -> None:
    store = tmp_path / "store"
    ran = tmp_path / "ran"
    cfg = make_cfg(
        tmp_path,
        tree,
        {
            "before_snapshot": [
                # runs inside the lock: it exists while the hook runs
                f"test -e {store}/locks/box.lock && echo first >> {ran}",
                "echo 'maintenance mode: refused' >&2; exit 1",
                f"echo third >> {ran}",
            ],
            "after_snapshot": [f"echo after >> {ran}"],
        },
    )
    storage = LocalStorage(cfg.storage.path)
    with pytest.raises(HookError) as exc:
        run_snapshot(cfg, "box", storage=storage, connect=local)
    msg = str(exc.value)
    assert msg.startswith("box: hook hosts.box.hooks.before_snapshot[1] exited with status 1")
    assert "maintenance mode: refused" in msg
    assert ran.read_text() == "first\n"  # neither the third before hook nor the after hook
    assert catalog.list_snapshots(storage, "box") == []
    assert storage.head(layout.lock_key("box")) is None
    assert [i.key for i in storage.list("")] == []
    env = failure_env(tmp_path)
    assert env is not None and env["VKBACKUP_STATUS"] == "failed"
    assert env["VKBACKUP_HOST"] == "box" and env["VKBACKUP_COMMAND"] == "snapshot"
    assert "before_snapshot[1]" in env["VKBACKUP_ERROR"]
    assert "maintenance mode: refused" in env["VKBACKUP_ERROR"]


def test_failing_after_hook_gives_a_partial_run_and_a_listed_snapshot(
    tmp_path: Path, tree: Path
) -> None:
    store = tmp_path / "store"
    cfg = make_cfg(
        tmp_path,
        tree,
        {
            "after_snapshot": [
                # runs after the manifest is written, still inside the lock
                f"ls {store}/snapshots/box/*.json && test -e {store}/locks/box.lock",
                "echo 'cache: unreachable' >&2; exit 4",
            ]
        },
    )
    storage = LocalStorage(cfg.storage.path)
    r = run_snapshot(cfg, "box", storage=storage, connect=local)
    assert r.status == "partial" and len(r.hook_errors) == 1
    assert "hosts.box.hooks.after_snapshot[1] exited with status 4" in r.hook_errors[0]
    assert "cache: unreachable" in r.hook_errors[0]
    m = catalog.load_manifest(storage, "box", r.id)
    assert m.status == "complete"
    assert [sid for _, sid in catalog.list_snapshots(storage, "box")] == [r.id]
    assert storage.head(layout.lock_key("box")) is None
    env = failure_env(tmp_path)
    assert env is not None
    assert env["VKBACKUP_STATUS"] == "partial" and env["VKBACKUP_SNAPSHOT"] == r.id


def test_successful_hooks_leave_the_run_complete(tmp_path: Path, tree: Path) -> None:
    ran = tmp_path / "ran"
    cfg = make_cfg(
        tmp_path,
        tree,
        {"before_snapshot": [f"echo before >> {ran}"], "after_snapshot": [f"echo after >> {ran}"]},
    )
    r = run_snapshot(cfg, "box", storage=LocalStorage(cfg.storage.path), connect=local)
    assert r.status == "complete" and r.hook_errors == []
    assert ran.read_text() == "before\nafter\n"
    assert failure_env(tmp_path) is None


def test_a_hook_past_its_timeout_is_killed(tmp_path: Path, tree: Path) -> None:
    cfg = make_cfg(tmp_path, tree, {"before_snapshot": ["sleep 60"], "timeout": 1})
    t0 = time.monotonic()
    with pytest.raises(HookError) as exc:
        run_snapshot(cfg, "box", storage=LocalStorage(cfg.storage.path), connect=local)
    assert time.monotonic() - t0 < 20
    assert "exited with status 124" in str(exc.value) and "hooks.timeout, 1s" in str(exc.value)


def test_hook_output_is_logged_masked(tmp_path: Path, tree: Path, logged: io.StringIO) -> None:
    secret = "pw-" + os.urandom(6).hex()
    register_secret(secret)
    cfg = make_cfg(
        tmp_path,
        tree,
        {
            "before_snapshot": [f"echo 'token is {secret}'"],
            "after_snapshot": [f"echo 'failed with {secret}' >&2; exit 1"],
        },
    )
    r = run_snapshot(cfg, "box", storage=LocalStorage(cfg.storage.path), connect=local)
    assert r.status == "partial"
    text = logged.getvalue()
    assert "hook hosts.box.hooks.before_snapshot[0] stdout" in text and "token is ***" in text
    assert "failed with ***" in text
    assert secret not in text
    # the error text itself (what the CLI prints, what on_failure gets) is masked too
    assert secret not in r.hook_errors[0] and "failed with ***" in r.hook_errors[0]
    env = failure_env(tmp_path)
    assert env is not None and secret not in env["VKBACKUP_ERROR"]
