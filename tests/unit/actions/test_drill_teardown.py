"""Drill teardown runs `rm -rf`: no path recorded in a manifest (a hostile bucket
can forge one) steers it outside what the drill itself wrote. A path is removed
only if its files step ran in this drill, it did not exist before, the CONFIG's
paths of that files source cover it, and it is a plain absolute path; on the
target it travels on stdin, and a symlinked parent keeps it (issue 16, finding 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vkbackup.actions import drill as drill_module
from vkbackup.actions.drill import (
    EXISTING_PATHS,
    REMOVE_PATHS,
    files_to_remove,
    remove_files,
    run_drill,
    teardown,
    unsafe_path,
)
from vkbackup.config import Config
from vkbackup.config.model import HostConfig, SourceConfig
from vkbackup.restore.plan import Plan
from vkbackup.restore.playbook import Playbook
from vkbackup.restore.runner import StepResult
from vkbackup.restore.session import RestoreReport
from vkbackup.restore.steps import FilesParams, PreflightParams, Step
from vkbackup.storage.local import LocalStorage
from vkbackup.transport.base import Completed, pipeline_argv
from vkbackup.transport.local import LocalTransport

SID = "20250101T000000Z-abcd"
HOSTILE = [
    "/",
    "",
    "etc",
    "/etc",
    "/opt",
    "/opt/app/../../",
    "/opt/app/../..",
    "/opt/app/../../etc",
    "/opt/app/.",
    "/opt//app",
    "/opt/app/",
    "/opt/app/x\nrm -rf /",
    "/opt/app/x\x00y",
    "/opt/app/\x1b[2J",
    "/$(reboot)",
    "/opt/app/lone\ud800",
]


@pytest.mark.parametrize("path", HOSTILE)
def test_unsafe_paths_are_refused(path: str) -> None:
    assert unsafe_path(path) is not None


@pytest.mark.parametrize("path", ["/opt/app/.env", "/opt/app/$(touch pwned)", "/srv/a b/c"])
def test_plain_deep_absolute_paths_pass(path: str) -> None:
    assert unsafe_path(path) is None


def plan_with(members: list[str], source: str = "app") -> Plan:
    steps = [
        Step("preflight", "preflight", PreflightParams()),
        Step(
            f"files:{source}",
            "put files",
            FilesParams(members=tuple(members), patterns=("/",)),  # the manifest claims "/"
            source,
        ),
    ]
    return Plan(SID, "prod", "derived", steps)


MEMBERS = [
    *HOSTILE,
    "/opt/app/.env",
    "/opt/app/$(touch pwned)",
    "/opt/app/existing",
    "/usr/local/bin/docker",  # safe-looking, but no configured path covers it
]


def test_only_configured_new_paths_of_steps_run_now_are_removed() -> None:
    remove, kept = files_to_remove(
        plan_with(MEMBERS), {"files:app"}, {"app": ("/opt/app",)}, {"/opt/app/existing"}
    )
    assert remove == ["/opt/app/.env", "/opt/app/$(touch pwned)"]
    assert len(kept) == len(MEMBERS) - 2
    assert any("/usr/local/bin/docker (outside the configured paths" in k for k in kept)
    assert any("/opt/app/existing (it existed before the drill)" in k for k in kept)
    assert all("\n" not in k and "\x1b" not in k for k in kept)


def test_nothing_is_removed_for_a_step_not_run_now_or_a_source_not_configured() -> None:
    plan = plan_with(["/opt/app/.env"])
    assert files_to_remove(plan, set(), {"app": ("/opt/app",)})[0] == []  # resumed
    assert files_to_remove(plan, {"files:app"}, {})[0] == []  # not in the config
    assert files_to_remove(plan, {"files:app"}, {"other": ("/opt/app",)})[0] == []


def test_teardown_never_puts_a_path_in_the_command_and_refuses_an_unsafe_one() -> None:
    class Recorder:
        name = "scratch"

        def __init__(self) -> None:
            self.calls: list[tuple[list[str], bytes]] = []

        def run(self, argv: list[str], *, input: bytes = b"", check: bool = True) -> Completed:
            self.calls.append((argv, input))
            return Completed(argv, 0, b"", "")

    t = Recorder()
    teardown(t, plan_with(MEMBERS), ["/opt/app/$(touch pwned)"])  # type: ignore[arg-type]
    rm = [(a, i) for a, i in t.calls if a == pipeline_argv(REMOVE_PATHS)]
    assert rm == [(pipeline_argv(REMOVE_PATHS), b"/opt/app/$(touch pwned)\n")]
    text = "\n".join(" ".join(a) for a, _ in t.calls)
    assert "pwned" not in text and "rm -rf" not in text.replace(REMOVE_PATHS, "")
    for bad in ("/", "/etc", "/opt/app/x\nrm -rf /", "/opt/app/../../"):
        with pytest.raises(Exception, match="refusing the path"):
            teardown(t, plan_with([]), [bad])  # type: ignore[arg-type]


def test_the_target_side_removes_only_below_real_directories(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / ".env").write_text("x")
    (app / "$(touch pwned)").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    (tmp_path / "link").symlink_to(outside)
    paths = [
        str(app / ".env"),
        str(app / "$(touch pwned)"),
        str(tmp_path / "link" / "keep"),  # its parent is a symlink
        str(app / "absent"),
    ]
    # remove_files only: the rest of teardown talks to Docker, which this machine may run
    out = remove_files(LocalTransport(), paths)
    assert f"file {app / '.env'}" in out and f"file {app / '$(touch pwned)'}" in out
    assert f"kept {tmp_path / 'link' / 'keep'} (a parent directory is a symlink)" in out
    assert not (app / ".env").exists() and not (app / "$(touch pwned)").exists()
    assert (outside / "keep").read_text() == "precious"
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()
    t = LocalTransport()
    (app / "here").write_text("")
    got = t.run(pipeline_argv(EXISTING_PATHS), input=f"{app / 'here'}\n{app / 'no'}\n".encode())
    assert got.stdout.decode().splitlines() == [str(app / "here")]


class FakeTarget:
    """The scratch host: *files* exist; every command is recorded."""

    name = "scratch"

    def __init__(self, files: set[str], calls: list[tuple[list[str], bytes]]) -> None:
        self.files = files
        self.calls = calls

    def run(self, argv: list[str], *, input: bytes = b"", check: bool = True) -> Completed:
        self.calls.append((argv, input))
        lines = input.decode().splitlines()
        if argv == pipeline_argv(EXISTING_PATHS):
            return Completed(
                argv, 0, "".join(f + "\n" for f in lines if f in self.files).encode(), ""
            )
        if argv == pipeline_argv(REMOVE_PATHS):
            return Completed(argv, 0, "".join(f"file {f}\n" for f in lines).encode(), "")
        return Completed(argv, 0, b"", "")

    def close(self) -> None:
        pass


def test_run_drill_removes_only_what_its_own_restore_wrote(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plan = plan_with(MEMBERS)
    monkeypatch.setattr(drill_module, "build_plan", lambda *a, **kw: (None, plan))

    def restore(*a: Any, **kw: Any) -> RestoreReport:
        return RestoreReport(
            snapshot=SID,
            host="prod",
            target="root@10.0.0.9:22",
            playbook="derived",
            started="2025-01-01T00:00:00Z",
            status="ok",
            steps=[StepResult("files:app", "files", "put files", "done")],
        )

    monkeypatch.setattr(drill_module, "run_restore", restore)
    src = SourceConfig(type="files", name="app", where="hosts.prod.sources[0]", paths=("/opt/app",))
    cfg = Config(
        source_file=None,
        hosts={"prod": HostConfig(name="prod", address="10.0.0.1", sources=(src,))},
    )
    calls: list[tuple[list[str], bytes]] = []
    res = run_drill(
        cfg,
        "prod",
        "root@10.0.0.9",
        storage=LocalStorage(tmp_path / "store"),
        connect=lambda h: FakeTarget({"/opt/app/existing"}, calls),  # type: ignore[arg-type,return-value]
        identities=lambda: [],
        playbook=Playbook(),
        report_dir=tmp_path / "reports",
        teardown_after=True,
    )
    [(_, removed)] = [(a, i) for a, i in calls if a == pipeline_argv(REMOVE_PATHS)]
    assert removed.decode().splitlines() == ["/opt/app/.env", "/opt/app/$(touch pwned)"]
    for argv, _ in calls:  # no recorded path is ever spliced into a command
        for m in MEMBERS:
            if len(m) > 4:
                assert m not in " ".join(argv)
    assert res.removed == ["file /opt/app/.env", "file /opt/app/$(touch pwned)"]
    assert any("teardown left /etc (a top-level directory)" in w for w in res.doc["warnings"])


def test_a_drill_record_that_cannot_be_signed_is_a_warning_not_a_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A machine that only trusts keys ([signing] trusted, no key) drills fine: the
    record it cannot sign is not stored, and the reports say so."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from vkbackup.signed_storage import SignedStorage
    from vkbackup.signing import Trust

    plan = plan_with(MEMBERS)
    monkeypatch.setattr(drill_module, "build_plan", lambda *a, **kw: (None, plan))
    report = RestoreReport(
        snapshot=SID,
        host="prod",
        target="root@10.0.0.9:22",
        playbook="derived",
        started="2025-01-01T00:00:00Z",
        status="ok",
    )
    monkeypatch.setattr(drill_module, "run_restore", lambda *a, **kw: report)
    cfg = Config(source_file=None, hosts={"prod": HostConfig(name="prod", address="10.0.0.1")})
    key = Ed25519PrivateKey.generate().public_key()
    store = SignedStorage(LocalStorage(tmp_path / "store"), Trust(key=None, trusted=(key,)))
    res = run_drill(
        cfg,
        "prod",
        "root@10.0.0.9",
        storage=store,
        connect=lambda h: FakeTarget(set(), []),  # type: ignore[arg-type,return-value]
        identities=lambda: [],
        playbook=Playbook(),
        report_dir=tmp_path / "reports",
        teardown_after=False,
    )
    assert res.doc["status"] == "ok"
    assert any(
        w.startswith("not recorded in storage: drills/prod/") and "cannot be signed" in w
        for w in res.doc["warnings"]
    )
    assert list(store.list("drills/")) == []
    assert res.reports  # the Markdown/JSON/HTML reports were still written
