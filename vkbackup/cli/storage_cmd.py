"""`storage check [--json]`: probe the configured storage (or, with the global
--storage NAME, that copy's, judged by its own [[copies]] settings), print a
table.

Exit status 0 when every required capability works, 1 (a StorageError raised
to the CLI entry point) when one fails, 10 when the storage cannot be reached
at all (the "reach" probe); --json prints the report either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import json_output
from vkbackup.errors import StorageError, StorageUnreachableError

if TYPE_CHECKING:
    from vkbackup.actions.storage_check import CheckReport

_MARK = {"ok": "ok", "fail": "FAIL", "warn": "warn", "info": "info", "skip": "skip"}


@click.group("storage")
def storage_group() -> None:
    """Inspect the configured storage."""


@storage_group.command("check")
@json_output
@pass_app
def storage_check(app: AppContext, as_json: bool) -> None:
    """Probe the storage ([storage], or the copy the global --storage names):
    write, read back, list, delete, multipart, checksums, versioning and
    Object Lock (judged against that storage's own settings). Exit 1 if a
    required capability fails, 10 if the storage cannot be reached at all (a
    local directory of [storage] is created, as the first snapshot would; a
    copy's must exist)."""
    from vkbackup.actions.storage_check import run_storage_check

    report = run_storage_check(app.storage_config(), app.backend(create=True))
    if as_json:
        emit_json(report.to_json())
    else:
        click.echo(render_table(report))
    failed = report.failed()
    if failed:
        kind = StorageUnreachableError if "reach" in {c.name for c in failed} else StorageError
        raise kind(
            f"{report.target}: {len(failed)} required storage capability(ies) failed: "
            + ", ".join(c.name for c in failed)
        )


def render_table(report: CheckReport) -> str:
    """Given a CheckReport, return the human table with hints under the rows."""
    rows = [
        (c.name + (" *" if c.required else ""), _MARK[c.status], c.detail) for c in report.checks
    ]
    w1 = max([len(r[0]) for r in rows] + [5])
    w2 = max([len(r[1]) for r in rows] + [6])
    lines = [f"storage: {report.target}", "", f"{'CHECK':<{w1}}  {'RESULT':<{w2}}  DETAIL"]
    for c, (name, mark, detail) in zip(report.checks, rows, strict=True):
        lines.append(f"{name:<{w1}}  {mark:<{w2}}  {detail}")
        if c.hint and c.status in ("fail", "warn", "info"):
            lines.append(f"{'':<{w1}}  {'':<{w2}}  -> {c.hint}")
    lines.append("")
    lines.append(
        "* required" + ("" if report.ok else "   RESULT: storage is NOT usable as configured")
    )
    return "\n".join(lines)


def register(cli: click.Group) -> None:
    cli.add_command(storage_group)
