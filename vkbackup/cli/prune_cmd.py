"""`vkbackup prune`: delete what the retention policy does not keep.

Never the newest complete snapshot of a host, never an object a kept
snapshot uses, never one under Object Lock; every keep is explained, and
--dry-run shows the plan without deleting. With the global --storage NAME it
prunes that copy by its own [copies.retention] (else [retention]).
"""

from __future__ import annotations

import functools

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import check_host, dry_run, host_option, json_output


@click.command("prune")
@host_option
@click.option("--break-lock", is_flag=True, help="Take over a stale lock of the host.")
@dry_run
@json_output
@pass_app
def prune_cmd(
    app: AppContext, host: str | None, break_lock: bool, dry_run: bool, as_json: bool
) -> None:
    """Delete snapshots the retention policy does not keep (keep_last, keep_hourly,
    keep_daily, keep_weekly, keep_monthly, keep_yearly), incomplete snapshots
    and stale uploads. Never the newest complete snapshot, never an object a kept
    snapshot uses, never one under Object Lock. Prints what it keeps and why.

    Streamed WAL (point-in-time recovery) is kept from the oldest base backup a
    kept snapshot uses on: the retention window stays reachable to the second.
    A gap in what stays is named."""
    from vkbackup import catalog
    from vkbackup.actions.prune import format_prune, run_prune
    from vkbackup.cli.outcomes import prune_outcomes

    storage = app.storage()
    names = [host] if host is not None and check_host(host) else None
    run = functools.partial(
        run_prune,
        storage,
        app.retention(),
        hosts=names,
        dry_run=dry_run,
        break_lock=break_lock,
        wal_skew=app.config().pitr.skew,
    )
    if dry_run:  # did nothing: nothing to report to monitoring
        report = run()
    else:
        hosts = names or sorted({h for h, _ in catalog.list_snapshots(storage)})
        report = app.monitored_job("prune", hosts, run, prune_outcomes)
    if as_json:
        emit_json(report.to_json())
    elif app.verbosity >= 0:
        for line in format_prune(report):
            click.echo(line)
    err = report.failure()
    if err is not None:
        raise err


def register(cli: click.Group) -> None:
    cli.add_command(prune_cmd)
