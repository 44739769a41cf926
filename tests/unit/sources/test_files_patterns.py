"""A hostile host cannot choose which paths a files snapshot records (issue 16,
finding 3): every path the host's `stat` reports must be a match of a configured
pattern, and restore refuses a forged list of paths outside the recorded patterns
before any step runs."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vkbackup.config.model import SourceConfig
from vkbackup.errors import IntegrityError, SnapshotError
from vkbackup.restore.objects import TarCheck
from vkbackup.restore.steps import FilesParams, Step
from vkbackup.sources import files
from vkbackup.sources.base import PlanContext
from vkbackup.transport.base import Completed

CFG = SourceConfig(
    type="files",
    name="app",
    where="hosts.prod.sources[1]",
    paths=("/srv/app/.env", "/etc/caddy/C*", "/srv/data"),
)
HONEST = (
    "600 0 0 12 1700000000 " + "a" * 64 + " /srv/app/.env\n"
    "644 0 0 99 1700000000 " + "b" * 64 + " /etc/caddy/Caddyfile\n"
    "755 0 0 4096 1700000000 " + "c" * 64 + " /srv/data\n"
)


@dataclass
class FakeHost:
    """Answers the stat script with *stdout*, as the host's own stat would."""

    stdout: str
    name: str = "prod"
    argvs: list[list[str]] = field(default_factory=list)

    def run(self, argv: list[str], **kw: Any) -> Completed:
        self.argvs.append(argv)
        return Completed(argv, 0, self.stdout.encode(), "")


def test_honest_stat_output_is_recorded() -> None:
    plan = files.FilesSource(CFG).plan(FakeHost(HONEST), PlanContext("S1"))  # type: ignore[arg-type]
    assert [e["path"] for e in plan.meta["files"]] == [
        "/srv/app/.env", "/etc/caddy/Caddyfile", "/srv/data"
    ]  # fmt: skip
    assert plan.meta["patterns"] == list(CFG.paths)


@pytest.mark.parametrize(
    "extra",
    [
        "/usr/local/bin/docker",
        "/srv/app/.env/../../../usr/local/bin/docker",
        "/srv/app/.envrc",
        "/srv/data/../../root/.ssh/authorized_keys",
        "/etc/caddy/../../usr/bin/sudo",
        "srv/app/.env",  # not absolute
    ],
)
def test_a_path_outside_the_patterns_refuses_the_source(extra: str) -> None:
    out = HONEST + "755 0 0 5 1700000000 " + "d" * 64 + " " + extra + "\n"
    with pytest.raises(SnapshotError) as info:
        files.FilesSource(CFG).plan(FakeHost(out), PlanContext("S1"))  # type: ignore[arg-type]
    msg = str(info.value)
    assert msg.startswith("prod: files source 'app'") and repr(extra) in msg
    assert "no configured path matches" in msg


def test_an_unreadable_line_refuses_the_source_printably() -> None:
    out = HONEST + "garbage \x1b[2J line\n"
    with pytest.raises(SnapshotError) as info:
        files.FilesSource(CFG).plan(FakeHost(out), PlanContext("S1"))  # type: ignore[arg-type]
    assert "unreadable line" in str(info.value) and "\x1b" not in str(info.value)


@dataclass
class WrappedStatHost:
    """Runs the real stat script in bash on this machine, with a `stat` wrapper first
    on PATH that adds a line, as a compromised host would."""

    stubs: Path
    name: str = "prod"

    def run(self, argv: list[str], **kw: Any) -> Completed:
        env = {**os.environ, "PATH": f"{self.stubs}:{os.environ['PATH']}"}
        p = subprocess.run(argv, capture_output=True, env=env, check=False, timeout=30)
        return Completed(argv, p.returncode, p.stdout, p.stderr.decode())


def test_a_stat_wrapper_on_the_host_cannot_add_a_path(tmp_path: Path) -> None:
    tree = tmp_path / "srv"
    tree.mkdir()
    (tree / ".env").write_text("A=1\n")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    real = subprocess.run(["bash", "-c", "command -v stat"], capture_output=True, text=True)
    # the script prints "$(stat ...) digest path": a whole line first, then the real one
    fake = "0 0 0 0 0 " + "e" * 64 + " /usr/local/bin/docker"
    (stubs / "stat").write_text(f'#!/bin/bash\necho {fake!r}\n{real.stdout.strip()} "$@"\n')
    (stubs / "stat").chmod(0o755)
    cfg = SourceConfig(type="files", name="app", where="hosts.prod.sources[1]",
                       paths=(str(tree / ".env"),))  # fmt: skip
    honest = files.FilesSource(cfg).plan(WrappedStatHost(tmp_path / "none"), PlanContext("S1"))  # type: ignore[arg-type]
    assert [e["path"] for e in honest.meta["files"]] == [str(tree / ".env")]
    with pytest.raises(SnapshotError) as info:
        files.FilesSource(cfg).plan(WrappedStatHost(stubs), PlanContext("S1"))  # type: ignore[arg-type]
    assert "'/usr/local/bin/docker'" in str(info.value)


# -- restore ---------------------------------------------------------------------


def meta(paths: tuple[str, ...], patterns: tuple[str, ...]) -> files.Meta:
    return files.Meta(paths=paths, patterns=patterns, secret=False)


def test_restore_refuses_a_forged_path_list_before_any_step() -> None:
    forged = meta(("/srv/app/.env", "/usr/local/bin/docker"), ("/srv/app/.env",))
    with pytest.raises(IntegrityError) as info:
        files.restore_steps("app", forged, [])
    assert "'/usr/local/bin/docker'" in str(info.value) and "'app'" in str(info.value)
    with pytest.raises(IntegrityError, match="no patterns"):
        files.restore_steps("app", meta(("/srv/app/.env",), ()), [])
    (step,) = files.restore_steps("app", meta(("/srv/app/.env",), ("/srv/app/.env",)), [])
    assert step.params == FilesParams(members=("/srv/app/.env",), patterns=("/srv/app/.env",))


def test_the_files_step_hands_the_patterns_to_the_tar_guard() -> None:
    class Ctx:
        def __init__(self) -> None:
            self.checks: list[TarCheck | None] = []

        def feed(self, obj: Any, make_argv: Any, *, tar: TarCheck | None = None) -> None:
            self.checks.append(tar)

    params = FilesParams(members=("/srv/app/.env", "/usr/bin/x"), patterns=("/srv/app/.env",))
    ctx = Ctx()
    files.restore_files(ctx, Step("files:app", "t", params, "app", [object()]))  # type: ignore[arg-type, list-item]
    assert ctx.checks == [
        TarCheck(allowed=("/srv/app/.env", "/usr/bin/x"), patterns=("/srv/app/.env",))
    ]
