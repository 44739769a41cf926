"""`vkbackup drill --to HOST`."""

from __future__ import annotations

from pathlib import Path

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import json_output, passphrase_file
from vkbackup.errors import RestoreError


@click.command("drill")
@click.option("--to", "to", required=True, metavar="HOST", help="A scratch host (must be empty).")
@click.option(
    "--host", "host", metavar="NAME", help="Whose latest snapshot (default: the only host)."
)
@click.option("--playbook", metavar="FILE", help="Restore playbook (TOML).")
@click.option("--report", "report_dir", metavar="DIR", default="vkbackup-drills", show_default=True)
@click.option("--teardown", is_flag=True, help="Remove what the drill restored afterwards.")
@click.option("--identity", "-i", metavar="PATH", help="Identity file (default: from the config).")
@passphrase_file
@json_output
@pass_app
def drill_cmd(
    app: AppContext,
    to: str,
    host: str | None,
    playbook: str | None,
    report_dir: str,
    teardown: bool,
    identity: str | None,
    passphrase_file: str | None,
    as_json: bool,
) -> None:
    """Restore the latest snapshot onto a scratch host, verify everything, and
    report RTO and RPO (Markdown, JSON and HTML in --report DIR).

    Exits 1 if any check fails. Warns when the previous successful drill is
    older than drill.max_age_days.
    """
    from vkbackup.actions import drill
    from vkbackup.actions.common import identities, iso, parse_target, utcnow
    from vkbackup.actions.restore import build_plan, run_restore
    from vkbackup.crypto.keys import read_passphrase
    from vkbackup.logs import get_logger
    from vkbackup.playbook import Playbook, load_playbook
    from vkbackup.progress import Progress
    from vkbackup.storage import open_storage
    from vkbackup.transport.ssh import connect

    log = get_logger("drill")
    cfg = app.config()
    storage = open_storage(cfg.storage)
    if host is None:
        if len(cfg.hosts) != 1:
            raise click.UsageError("several hosts are configured: say whose snapshot (--host)")
        host = next(iter(cfg.hosts))
    started = utcnow()
    warning = drill.drill_age_warning(storage, host, cfg.drill.max_age_days, started)
    if warning:
        log.warning("%s", warning)
    ids = identities(cfg, lambda: read_passphrase(passphrase_file), identity)
    book = load_playbook(Path(playbook)) if playbook else Playbook()
    manifest, plan = build_plan(storage, "latest", ids, book, host)
    target = parse_target(cfg, to)
    progress = Progress(enabled=None if app.verbosity >= 0 and not as_json else False)
    report = run_restore(
        plan, manifest, target, storage=storage, connect=connect, identities=ids,
        progress=progress,
    )  # fmt: skip
    removed: list[str] = []
    if teardown and report.status == "ok":
        t = connect(target)
        try:
            removed = drill.teardown(t, plan)
        finally:
            t.close()
    doc = {
        "host": host,
        "target": report.target,
        "started": iso(started),
        "finished": iso(utcnow()),
        "status": report.status,
        "error": report.error,
        "rpo_seconds": report.snapshot_age_seconds,
        "rto_seconds": report.rto_seconds,
        "restore": report.to_json(),
        "warnings": [w for w in [warning, *report.warnings] if w],
        "teardown": removed,
    }
    drill.record(storage, doc)
    paths = drill.write_reports(doc, Path(report_dir))
    if as_json:
        emit_json({**doc, "reports": [str(p) for p in paths]})
    elif app.verbosity >= 0:
        verdict = "PASSED" if report.status == "ok" else "FAILED"
        click.echo(
            f"drill {verdict}: snapshot {report.snapshot} of {host} onto {report.target}: "
            f"RTO {report.rto_seconds:.1f}s, RPO {report.snapshot_age_seconds / 3600:.2f}h"
        )
        if report.error:
            click.echo(f"  {report.error}")
        click.echo(
            f"  {len(report.verified)} checks verified; reports: " + ", ".join(map(str, paths))
        )
        if removed:
            click.echo(f"  teardown removed {len(removed)} items from {report.target}")
    if report.exception is not None:
        raise report.exception
    if report.status != "ok":
        raise RestoreError(report.error or "drill failed")


def register(cli: click.Group) -> None:
    cli.add_command(drill_cmd)
