"""`vkbackup snapshot [HOST | --host HOST]`: one snapshot of each host, then the exit code
that says how it went (0 complete, 3 partial, 1 nothing saved).

Hosts are snapshotted one after the other; each run is wrapped by the
monitoring pings and textfile (`AppContext.monitored`), so a cron job needs
nothing else to be watched.
"""

from __future__ import annotations

import functools

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import dry_run, host_alias, json_output, limits, one_host
from vkbackup.errors import ConfigError, PartialFailure, SnapshotError, UsageError
from vkbackup.progress import human_bytes


@click.command("snapshot")
@click.argument("host", required=False)
@host_alias
@click.option("--only", multiple=True, metavar="SOURCE", help="Only these sources.")
@click.option("--break-lock", is_flag=True, help="Take over a stale lock.")
@limits
@dry_run
@json_output
@pass_app
def snapshot_cmd(
    app: AppContext,
    host: str | None,
    host_option: str | None,
    only: tuple[str, ...],
    break_lock: bool,
    dry_run: bool,
    as_json: bool,
    limit_upload: int | None,
    limit_download: int | None,
) -> None:
    """Stream every source of HOST (default: every configured host) into a snapshot.

    Exit codes: 0 every source saved, 3 some failed (the snapshot is marked
    partial), 1 none (no snapshot is recorded).
    """
    from vkbackup.actions.snapshot import plan_snapshot, run_snapshot

    cfg = app.config()
    host = one_host(host, host_option)
    hosts = [host] if host else sorted(cfg.hosts)
    if not cfg.hosts:
        raise UsageError(
            f"{cfg.source_file}: no hosts configured",
            hint="vkbackup init user@address writes a config for a host",
        )
    if cfg.signing.configured and cfg.signing.key is None:
        raise ConfigError(
            f"{cfg.source_file}: [signing] lists trusted keys but no key: this machine "
            "cannot sign the manifest, and every reader would refuse it",
            hint="set signing.key to the backup machine's signing key "
            "(vkbackup keys generate --signing --out PATH)",
        )
    app.limit_transfer(limit_upload, limit_download)
    storage = app.storage(create=True)  # the first snapshot creates a local directory
    if dry_run:
        doc = {
            name: [f"{sc.type}:{sc.name}" for sc in plan_snapshot(cfg, name, only)]
            for name in hosts
        }
        if as_json:
            emit_json({"storage": storage.describe(), "hosts": doc})
        else:
            click.echo(f"would snapshot into {storage.describe()}:")
            for name, srcs in doc.items():
                h = cfg.hosts[name]
                click.echo(f"  host {name} ({h.user}@{h.address}:{h.port})")
                for line in srcs:
                    click.echo(f"    - {line}")
        return
    results = []
    for name in hosts:
        run = functools.partial(
            run_snapshot,
            cfg,
            name,
            storage=storage,
            connect=app.connect,
            only=only,
            break_lock=break_lock,
            progress=app.progress(as_json),
        )
        results.append(app.monitored(name, run))
    if as_json:
        emit_json([r.to_json() for r in results] if len(results) > 1 else results[0].to_json())
    elif app.verbosity >= 0:
        for r in results:
            click.echo(
                f"snapshot {r.id} of {r.host}: {r.status}, {human_bytes(r.bytes_new)} new, "
                f"{human_bytes(r.bytes_reused)} reused, {r.seconds:.1f}s -> {r.storage}"
            )
            for sr in r.sources:
                down = sr.downtime_seconds
                extra = f", containers down {down:.1f}s" if down else ""
                line = f"  {sr.status:6} {sr.type:13} {sr.name:24} "
                line += f"{human_bytes(sr.bytes_new):>10} new {human_bytes(sr.bytes_reused):>10} "
                line += f"reused {sr.seconds:6.1f}s{extra}"
                click.echo(line)
                if sr.error:
                    click.echo(f"         {sr.error}")
            for err in r.hook_errors:
                click.echo(f"  hook failed: {err}")
    failed = [r for r in results if r.status == "failed"]
    # a --only snapshot is "partial" but succeeded: only failed sources and
    # failed after_snapshot hooks count here
    partial = [
        r for r in results if r.hook_errors or any(sr.status == "failed" for sr in r.sources)
    ]
    if failed and len(failed) == len(results):
        raise SnapshotError(
            "; ".join(f"snapshot of {r.host} failed: no source could be saved" for r in failed)
        )
    if failed or partial:
        what = [f"{r.host}/{s.name}" for r in results for s in r.sources if s.error]
        hooks = [e.splitlines()[0] for r in results for e in r.hook_errors]
        parts = [f"some sources failed: {', '.join(what)}"] if what else []
        if hooks:
            parts.append("after_snapshot hooks failed: " + "; ".join(hooks))
        raise PartialFailure("; ".join(parts))


def register(cli: click.Group) -> None:
    cli.add_command(snapshot_cmd)
