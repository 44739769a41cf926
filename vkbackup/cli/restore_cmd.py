"""`vkbackup restore [SNAPSHOT|latest] --to HOST`: rebuild a host's stack elsewhere.

The command shows the plan (and asks, on a terminal, unless --yes) before
anything touches the target; --dry-run stops there. The restore itself is
`vkbackup.actions.restore`; this module only prints its plan and report.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import check_host, dry_run, json_output, limits, passphrase_file, yes
from vkbackup.errors import RestoreError, UsageError
from vkbackup.progress import human_bytes

if TYPE_CHECKING:
    from vkbackup.actions.restore import RestoreReport
    from vkbackup.crypto import Identity
    from vkbackup.restore.plan import Plan


def print_plan(plan: Plan) -> None:
    click.echo(
        f"restore plan for snapshot {plan.snapshot_id} of {plan.host} "
        f"(playbook: {plan.playbook}), {human_bytes(plan.bytes)} to transfer:"
    )
    number = {s.id: i for i, s in enumerate(plan.steps, 1)}
    for i, s in enumerate(plan.steps, 1):
        size = f"  [{human_bytes(s.bytes)}]" if s.objects else ""
        waits = ",".join(str(number[a]) for a in s.after if a in number)
        click.echo(f"  {i:2}. {s.id:40} {s.title}{size}")
        if waits:
            click.echo(f"      {'':40} after {waits}")
    for w in plan.warnings:
        click.echo(f"  warning: {w}")


def print_report(report: RestoreReport) -> None:
    click.echo(
        f"restore of {report.snapshot} ({report.host}) onto {report.target}: {report.status}"
    )
    click.echo(f"  {'status':12} {'at':>7}  {'took':>7}  step (in the order they ended)")
    for s in report.steps:
        click.echo(
            f"  {s.status:12} {s.started:6.1f}s {s.seconds:7.1f}s  {s.id:40} {s.detail[:100]}"
        )
    click.echo(f"  time to healthy (RTO): {report.rto_seconds:.1f}s")
    if report.recovered_age_seconds is not None:
        click.echo(f"  snapshot age: {report.snapshot_age_seconds / 3600:.1f}h")
        click.echo(f"  database recovered to (RPO): {report.recovered_age_seconds:.0f}s before")
    else:
        click.echo(f"  snapshot age (RPO): {report.snapshot_age_seconds / 3600:.1f}h")
    if report.verified:
        click.echo(f"  verified: {len(report.verified)} checks")
    if report.dns:
        click.echo("  DNS: point these records at the new host:")
        for r in report.dns:
            click.echo(f"    {r}")
    for w in report.warnings:
        click.echo(f"  warning: {w}")
    for e in report.hook_errors:
        click.echo(f"  hook failed: {e}")


@click.command("restore")
@click.argument("snapshot", default="latest")
@click.option(
    "--to", "to", required=True, metavar="HOST", help="Configured host or user@addr[:port]."
)
@click.option("--host", "host", metavar="NAME", help="Snapshots of this host (for 'latest').")
@click.option("--playbook", metavar="FILE", help="A restore playbook (TOML) that refines the plan.")
@click.option("--only", multiple=True, metavar="STEP_OR_SOURCE", help="Only these steps/sources.")
@click.option("--force", is_flag=True, help="Allow overwriting a target that is not empty.")
@click.option(
    "--path",
    "paths",
    multiple=True,
    metavar="P",
    help="With --into and one --only SOURCE: only this path (and below) of the source.",
)
@click.option(
    "--into",
    metavar="DIR",
    help="Put the --path selection under DIR on HOST (absolute, not /; new or empty).",
)
@click.option(
    "--to-time",
    "to_time",
    metavar="TIME",
    help='Point-in-time recovery of the pitr database to TIME ("2026-12-01 17:59:30+00") '
    'or "latest"; the rest from the newest snapshot at or before TIME.',
)
@click.option("--to-lsn", "to_lsn", metavar="LSN", help="Point-in-time recovery to a WAL position.")
@click.option(
    "--identity",
    "-i",
    metavar="PATH",
    help="Identity file (default: $VKBACKUP_IDENTITY, else encryption.identity).",
)
@limits
@passphrase_file
@dry_run
@yes
@json_output
@pass_app
def restore_cmd(
    app: AppContext,
    snapshot: str,
    to: str,
    host: str | None,
    playbook: str | None,
    only: tuple[str, ...],
    force: bool,
    paths: tuple[str, ...],
    into: str | None,
    to_time: str | None,
    to_lsn: str | None,
    identity: str | None,
    passphrase_file: str | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
    limit_upload: int | None,
    limit_download: int | None,
) -> None:
    """Rebuild the stack of SNAPSHOT (default: latest) on HOST.

    Without --playbook the plan is derived from the snapshot itself: files,
    images, volumes, databases, then the compose projects in dependency
    order, then health checks and the DNS checklist. Re-running after a
    failure resumes; re-running after success changes nothing.

    With --to-time TIME (or --to-lsn LSN), the postgres source with
    pitr = true is recovered to that point from the newest base backup before
    it and the WAL `vkbackup wal-stream` stored; the rest of the host comes
    from SNAPSHOT, by default the newest taken at or before TIME.

    With --only SOURCE --path P [--path ...] --into DIR: only those paths of one
    files, docker-volume or host source, put under DIR on HOST as the snapshot
    has them; nothing else is touched, so no --force is needed. DIR must not
    exist yet (it is made) or be an empty directory, never a symlink.
    """
    from vkbackup.actions.restore import build_plan, restore_hooks, run_restore
    from vkbackup.common import parse_target
    from vkbackup.pitr.recover import parse_target as parse_pitr
    from vkbackup.restore.playbook import Playbook, load_playbook

    cfg = app.config()
    host = check_host(host)
    pitr = parse_pitr(to_time, to_lsn)
    if pitr is not None and (paths or into):
        raise UsageError("--to-time and --to-lsn recover a database: not with --path/--into")
    if paths or into:
        check_paths_usage(only, paths, into)
    app.limit_transfer(limit_upload, limit_download)
    storage = app.storage()
    ids = app.identities(identity, passphrase_file)
    book = load_playbook(Path(playbook)) if playbook else Playbook()
    if host is None and len(cfg.hosts) > 1 and snapshot == "latest":
        raise UsageError(
            "several hosts are configured: say whose latest snapshot (--host NAME)",
        )
    if host is None and len(cfg.hosts) == 1 and snapshot == "latest":
        host = next(iter(cfg.hosts))
    if paths or into:
        restore_paths(app, snapshot, to, host, only, paths, into, ids, as_json, dry_run)
        return
    manifest, plan = build_plan(storage, snapshot, ids, book, host, pitr=pitr, skew=cfg.pitr.skew)
    plan = plan.only(only)
    target = parse_target(cfg, to)
    if dry_run:
        if as_json:
            emit_json(
                {
                    "snapshot": plan.snapshot_id,
                    "host": plan.host,
                    "target": f"{target.user}@{target.address}:{target.port}",
                    "bytes": plan.bytes,
                    "steps": [
                        {
                            "id": s.id,
                            "kind": s.kind,
                            "title": s.title,
                            "bytes": s.bytes,
                            "after": list(s.after),
                        }
                        for s in plan.steps
                    ],
                    "warnings": plan.warnings,
                }
            )
        else:
            print_plan(plan)
        return
    if not yes and sys.stdin.isatty() and not as_json:
        print_plan(plan)
        click.confirm(
            f"Restore snapshot {plan.snapshot_id} of {plan.host} onto "
            f"{target.user}@{target.address}:{target.port}?",
            abort=True,
        )
    report = run_restore(
        plan,
        manifest,
        target,
        storage=storage,
        connect=app.connect,
        identities=ids,
        force=force,
        progress=app.progress(as_json),
        hooks=restore_hooks(cfg, manifest.host),
    )
    if as_json:
        emit_json(report.to_json())
    else:
        print_report(report)
    if report.exception is not None:
        raise report.exception
    if report.status != "ok":
        raise RestoreError(report.error or "restore failed")


def check_paths_usage(only: tuple[str, ...], paths: tuple[str, ...], into: str | None) -> None:
    """Raise UsageError unless --path and --into come together with one --only."""
    if not paths or not into:
        raise UsageError("--path and --into go together: which paths, and under which DIR")
    if len(only) != 1:
        raise UsageError("--path/--into restore one source: give exactly one --only SOURCE")


def restore_paths(
    app: AppContext,
    snapshot: str,
    to: str,
    host: str | None,
    only: tuple[str, ...],
    paths: tuple[str, ...],
    into: str | None,
    ids: list[Identity],
    as_json: bool,
    dry_run: bool,
) -> None:
    """restore --path P --into DIR: some paths of one source, under DIR on the target
    (`vkbackup.actions.browse.restore_into`)."""
    from vkbackup.actions.browse import check_into, load_tree, open_source, restore_into, select
    from vkbackup.catalog import resolve
    from vkbackup.common import parse_target
    from vkbackup.textsafe import printable

    check_paths_usage(only, paths, into)
    assert into is not None
    into = check_into(into)
    storage = app.storage()
    manifest = resolve(storage, snapshot, host)
    target = parse_target(app.config(), to)
    view = open_source(storage, manifest, ids, only[0])
    tree = load_tree(storage, view, ids)
    where = f"{target.user}@{target.address}:{target.port}"
    if dry_run:
        for p in paths:
            for e in select(view, tree, p):
                click.echo(f"would put {view.shown(e.path)} under {where}:{printable(into)}")
        return
    t = app.connect(target)
    try:
        result = restore_into(storage, view, ids, tree, paths, into, t)
    finally:
        t.close()
    if as_json:
        emit_json(result.to_json())
        return
    click.echo(
        printable(
            f"put {result.entries} entries ({human_bytes(result.bytes)}) of {view.name} from "
            f"snapshot {result.snapshot} under {where}:{result.into}: {', '.join(result.paths)}"
        )
    )


def register(cli: click.Group) -> None:
    cli.add_command(restore_cmd)
