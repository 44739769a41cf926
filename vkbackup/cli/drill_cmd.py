"""`vkbackup drill --to HOST`: restore the latest snapshot onto a scratch host
and report whether it came back (`vkbackup.actions.drill` does the drill)."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import check_host, json_output, passphrase_file


@click.command("drill")
@click.option("--to", "to", required=True, metavar="HOST", help="A scratch host (must be empty).")
@click.option(
    "--host", "host", metavar="NAME", help="Whose latest snapshot (default: the only host)."
)
@click.option("--playbook", metavar="FILE", help="Restore playbook (TOML).")
@click.option("--report", "report_dir", metavar="DIR", default="vkbackup-drills", show_default=True)
@click.option("--teardown", is_flag=True, help="Remove what the drill restored afterwards.")
@click.option(
    "--to-time",
    "to_time",
    metavar="TIME",
    help='Recover the pitr database to TIME ("2026-12-01 17:59:30+00") or "latest".',
)
@click.option(
    "--identity",
    "-i",
    metavar="PATH",
    help="Identity file (default: $VKBACKUP_IDENTITY, else encryption.identity).",
)
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
    to_time: str | None,
    identity: str | None,
    passphrase_file: str | None,
    as_json: bool,
) -> None:
    """Restore the latest snapshot onto a scratch host, verify everything, and
    report RTO and RPO (Markdown, JSON and HTML in --report DIR).

    With --to-time, the postgres source with pitr = true is recovered to that
    point (as `restore --to-time`), and the RPO is the age of the newest WAL
    replayed.

    Exits 1 if any check fails. Warns when the previous successful drill is
    older than drill.max_age_days.
    """
    from vkbackup.actions.drill import run_drill
    from vkbackup.cli.outcomes import drill_outcome
    from vkbackup.pitr.recover import parse_target as parse_pitr
    from vkbackup.restore.playbook import Playbook, load_playbook

    cfg = app.config()
    host = check_host(host)
    pitr = parse_pitr(to_time, None)
    storage = app.storage()
    if host is None:
        if len(cfg.hosts) != 1:
            raise click.UsageError("several hosts are configured: say whose snapshot (--host)")
        host = next(iter(cfg.hosts))
    run = functools.partial(
        run_drill,
        cfg,
        host,
        to,
        storage=storage,
        connect=app.connect,
        identities=lambda: app.identities(identity, passphrase_file),
        playbook=load_playbook(Path(playbook)) if playbook else Playbook(),
        report_dir=Path(report_dir),
        teardown_after=teardown,
        progress=app.progress(as_json),
        pitr=pitr,
    )
    result = app.monitored_job("drill", [host], run, drill_outcome)
    report = result.report
    if as_json:
        emit_json(result.to_json())
    elif app.verbosity >= 0:
        verdict = "PASSED" if report.status == "ok" else "FAILED"
        click.echo(
            f"drill {verdict}: snapshot {report.snapshot} of {host} onto {report.target}: "
            f"RTO {report.rto_seconds:.1f}s, RPO {report.rpo_seconds / 3600:.2f}h"
        )
        if report.error:
            click.echo(f"  {report.error}")
        click.echo(
            f"  {len(report.verified)} checks verified; reports: "
            + ", ".join(map(str, result.reports))
        )
        if result.removed:
            click.echo(f"  teardown removed {len(result.removed)} items from {report.target}")
    err = result.failure()
    if err is not None:
        raise err


def register(cli: click.Group) -> None:
    cli.add_command(drill_cmd)
