"""`vkbackup check`: exit 0 when every host's newest complete snapshot, passing
verify and successful drill are recent enough, 1 naming what is stale
(`vkbackup.actions.check` decides). Reads storage only: no identity, no host.

With monitoring.textfile configured, the ages it measured are written there
too, so a cron'd check keeps the Prometheus ages current between runs; not
those of a copy (--storage NAME): the textfile's ages are [storage]'s.
"""

from __future__ import annotations

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import check_host, json_output
from vkbackup.errors import UsageError


@click.command("check")
@click.option(
    "--host", "host", metavar="NAME", help="Only this host (default: every configured host)."
)
@click.option(
    "--max-age", metavar="DURATION", help="Newest complete snapshot (default: check.max_age, 26h)."
)
@click.option(
    "--max-verify-age",
    metavar="DURATION",
    help="Newest passing verify (default: check.max_verify_age, 8d).",
)
@click.option(
    "--max-drill-age",
    metavar="DURATION",
    help="Newest successful drill (default: check.max_drill_age, else drill.max_age_days).",
)
@json_output
@pass_app
def check_cmd(
    app: AppContext,
    host: str | None,
    max_age: str | None,
    max_verify_age: str | None,
    max_drill_age: str | None,
    as_json: bool,
) -> None:
    """Fail when a host's newest complete snapshot, passing verify or successful
    drill is older than its limit, or absent. DURATION: "26h", "8d", "90m", "1d12h".

    Exit codes: 0 everything fresh, 1 something stale (each named: host, what,
    its age and the limit, or "none on record").
    """
    from dataclasses import replace

    from vkbackup import monitoring
    from vkbackup.actions.check import Limits, check_hosts, format_check, hosts_to_check
    from vkbackup.durations import parse_duration

    cfg = app.config()
    limits = Limits.from_config(cfg)
    if max_age is not None:
        limits = replace(limits, snapshot=parse_duration(max_age, "--max-age"))
    if max_verify_age is not None:
        limits = replace(limits, verify=parse_duration(max_verify_age, "--max-verify-age"))
    if max_drill_age is not None:
        limits = replace(limits, drill=parse_duration(max_drill_age, "--max-drill-age"))
    storage = app.storage()
    hosts = hosts_to_check(cfg, storage, check_host(host))
    if not hosts:
        raise UsageError(
            f"{cfg.source_file or '(embedded defaults)'}: nothing to check: no hosts are "
            f"configured and {storage.describe()} holds no snapshot",
            hint="name a host with --host, or configure [hosts.NAME]",
        )
    report = check_hosts(storage, hosts, limits)
    if cfg.monitoring.textfile is not None and app.storage_name is None:
        # a copy's ages (--storage NAME) must not replace [storage]'s in the textfile
        monitoring.write_textfile(cfg.monitoring.textfile, [], report.hosts)
    if as_json:
        emit_json(report.to_json())
    elif app.verbosity >= 0:
        for line in format_check(report):
            click.echo(line)
    err = report.failure()
    if err is not None:
        raise err


def register(cli: click.Group) -> None:
    cli.add_command(check_cmd)
