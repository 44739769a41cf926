"""`vkbackup snapshot [HOST | --host HOST]`: one snapshot of each host, then the exit code
that says how it went (0 complete, 3 partial, 1 nothing saved).

Hosts are snapshotted one after the other; each run is wrapped by the
monitoring pings and textfile (`AppContext.monitored`), so a cron job needs
nothing else to be watched. With [snapshot] copy_after, each new snapshot is
then copied to every [[copies]] storage (`copy_cmd.copy_snapshots`, reported
as the job "copy"); a copy that fails makes the run partial (exit 3), naming
the copy, and the snapshot stays.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import dry_run, host_alias, json_output, limits, one_host
from vkbackup.errors import ConfigError, PartialFailure, SnapshotError, UsageError, VkError
from vkbackup.progress import human_bytes

if TYPE_CHECKING:
    from vkbackup.actions.copy import CopyResult


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
    if app.storage_name is not None:
        raise UsageError(
            f"--storage {app.storage_name}: a snapshot is written to [storage]; "
            "copies are filled by `vkbackup copy` (or [snapshot] copy_after)"
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
    copied = None
    if cfg.snapshot.copy_after and cfg.copies:
        copied = _copy_after(app, [(r.host, r.id) for r in results if r.status != "failed"])
    elif cfg.snapshot.copy_after:
        from vkbackup.cli.config_cmd import config_warnings
        from vkbackup.logs import get_logger

        for w in config_warnings(cfg):
            get_logger("copy").warning("%s", w)
    if as_json:
        docs = [r.to_json() for r in results]
        if copied is not None:
            for d in docs:
                d["copies"] = [
                    i.to_json() for i in copied.items if (i.host, i.id) == (d["host"], d["id"])
                ]
        emit_json(docs if len(docs) > 1 else docs[0])
    elif app.verbosity >= 0:
        for r in results:
            click.echo(
                f"snapshot {r.id} of {r.host}: {r.status}, {human_bytes(r.bytes_new)} new, "
                f"{human_bytes(r.bytes_reused)} reused, {r.seconds:.1f}s -> {r.storage}"
            )
            for sr in r.sources:
                down = sr.downtime_seconds
                held = "paused" if sr.meta.get("quiesce") == "pause" else "down"
                each = ", ".join(f"{c} {s:.1f}s" for c, s in sorted(sr.downtime.items()))
                extra = f", containers {held} {down:.1f}s" if down else ""
                extra += f" ({each})" if down and each else ""
                line = f"  {sr.status:6} {sr.type:13} {sr.name:24} "
                line += f"{human_bytes(sr.bytes_new):>10} new {human_bytes(sr.bytes_reused):>10} "
                line += f"reused {sr.seconds:6.1f}s{extra}"
                click.echo(line)
                if sr.error:
                    click.echo(f"         {sr.error}")
            for err in r.hook_errors:
                click.echo(f"  hook failed: {err}")
        for item in copied.items if copied is not None else ():
            click.echo(item.summary())
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
    copy_failed = copied.failed if copied is not None else []
    if failed or partial or copy_failed:
        what = [f"{r.host}/{s.name}" for r in results for s in r.sources if s.error]
        hooks = [e.splitlines()[0] for r in results for e in r.hook_errors]
        parts = [f"some sources failed: {', '.join(what)}"] if what else []
        if hooks:
            parts.append("after_snapshot hooks failed: " + "; ".join(hooks))
        if copy_failed:
            parts.append(
                "copies failed (the snapshot stays): "
                + "; ".join(f"copy {i.copy}: {i.host}/{i.id}: {i.error}" for i in copy_failed)
            )
        raise PartialFailure("; ".join(parts))


def _copy_after(app: AppContext, snapshots: list[tuple[str, str]]) -> CopyResult | None:
    """[snapshot] copy_after: copy the new *snapshots* to every copy and return
    the result (None when there is nothing to copy). A copy that cannot even
    start (a storage that cannot be opened) is a failed item of the result, not
    an error: the snapshot is taken either way."""
    from vkbackup.actions.copy import CopyItem, CopyResult
    from vkbackup.cli.copy_cmd import copy_snapshots
    from vkbackup.logs import get_logger

    if not snapshots:
        return None
    try:
        return copy_snapshots(app, snapshots, ())
    except VkError as e:
        get_logger("copy").error("copy after the snapshot failed: %s", e)
        result = CopyResult(app.storage().describe())
        names = [c.name for c in app.config().copies]
        result.items = [
            CopyItem(n, h, sid, "failed", error=str(e), exc=e)
            for n in names
            for h, sid in snapshots
        ]
        return result


def register(cli: click.Group) -> None:
    cli.add_command(snapshot_cmd)
