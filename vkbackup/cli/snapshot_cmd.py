"""`vkbackup init HOST` and `vkbackup snapshot [HOST]`."""

from __future__ import annotations

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import dry_run, json_output, yes
from vkbackup.errors import PartialFailure, SnapshotError, UsageError, VkError
from vkbackup.progress import human_bytes


@click.command("init")
@click.argument("target", metavar="USER@ADDRESS[:PORT]")
@click.option(
    "--name", "host_name", metavar="NAME", help="Host name in the config (default: prod)."
)
@click.option("--out", metavar="PATH", help="Write the config here (default: standard output).")
@click.option(
    "--key-file", metavar="PATH", help="SSH private key (default: the config's, or agent)."
)
@click.option("--known-hosts", metavar="PATH", default="~/.ssh/known_hosts", show_default=True)
@click.option("-r", "--recipient", "recipients", multiple=True, help="age1... public key.")
@yes
@pass_app
def init_cmd(
    app: AppContext,
    target: str,
    host_name: str | None,
    out: str | None,
    key_file: str | None,
    known_hosts: str,
    recipients: tuple[str, ...],
    yes: bool,
) -> None:
    """Connect to a host, discover what it runs, and write a config that backs it all up.

    Discovers compose projects, their .env files, the Caddyfile and Caddy's
    data, named volumes and who uses them, PostgreSQL containers and their
    databases, and the images the containers run. An unknown host key is shown
    and trusted only on confirmation (or --yes). Storage and encryption come from
    the current config when there is one, else local storage and --recipient.
    """
    from pathlib import Path

    from vkbackup.actions import init as init_action
    from vkbackup.actions.common import parse_target
    from vkbackup.config import parse_config
    from vkbackup.config.model import HostConfig
    from vkbackup.transport.ssh import connect

    cfg = app.config()
    if out and Path(out).exists():
        raise UsageError(f"{out}: already exists; refusing to overwrite it")
    recips = list(recipients) or list(cfg.encryption.recipients)
    if not recips:
        raise UsageError(
            "no recipient: pass -r age1... or use a config that has encryption.recipients",
            hint="vkbackup keys generate prints a recipient",
        )
    base = parse_target(cfg, target if "@" in target else f"root@{target}")
    kh = Path(known_hosts).expanduser()
    host = HostConfig(
        name=host_name or "prod",
        address=base.address,
        port=base.port,
        user=base.user,
        key_file=Path(key_file).expanduser() if key_file else base.key_file,
        known_hosts=kh,
    )

    def ask(fp: str) -> bool:
        click.echo(f"{host.address}:{host.port} offers host key {fp}", err=True)
        if yes:
            click.echo("trusting it (--yes)", err=True)
            return True
        return click.confirm("Trust this key and add it to " + str(kh) + "?", err=True)

    init_action.trust_host_key(host.address, host.port, kh, ask)
    t = connect(host)
    try:
        found = init_action.discover(t)
    finally:
        t.close()
    identity = str(cfg.encryption.identity) if cfg.encryption.identity else None
    text = init_action.render_config(
        host.name,
        host,
        found,
        init_action.storage_toml(cfg.storage),
        init_action.encryption_toml(recips, identity),
    )
    import tomllib

    parse_config(tomllib.loads(text), out or "<generated>")  # never write a config we reject
    if out:
        p = Path(out).expanduser()
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "x") as f:
            f.write(text)
        p.chmod(0o600)
        click.echo(
            f"wrote {p}: review it, then `vkbackup --config {p} snapshot --dry-run`", err=True
        )
    else:
        click.echo(text, nl=False)


@click.command("snapshot")
@click.argument("host", required=False)
@click.option("--only", multiple=True, metavar="SOURCE", help="Only these sources.")
@click.option("--break-lock", is_flag=True, help="Take over a stale lock.")
@dry_run
@json_output
@pass_app
def snapshot_cmd(
    app: AppContext,
    host: str | None,
    only: tuple[str, ...],
    break_lock: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Stream every source of HOST (default: every configured host) into a snapshot.

    Exit codes: 0 every source saved, 3 some failed (the snapshot is marked
    partial), 1 none (no snapshot is recorded).
    """
    import time

    from vkbackup import monitoring
    from vkbackup.actions.snapshot import plan_snapshot, run_snapshot
    from vkbackup.progress import Progress
    from vkbackup.storage import open_storage
    from vkbackup.transport.ssh import connect

    cfg = app.config()
    hosts = [host] if host else sorted(cfg.hosts)
    if not hosts:
        raise UsageError(
            f"{cfg.source_file or '(embedded defaults)'}: no hosts configured",
            hint="vkbackup init user@address writes a config for a host",
        )
    storage = open_storage(cfg.storage)
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
        progress = Progress(enabled=None if app.verbosity >= 0 and not as_json else False)
        monitoring.notify(cfg.monitoring, "start", host=name)
        t0 = time.monotonic()
        try:
            result = run_snapshot(
                cfg,
                name,
                storage=storage,
                connect=connect,
                only=only,
                break_lock=break_lock,
                progress=progress,
            )
        except (VkError, KeyboardInterrupt) as e:
            monitoring.report_error(cfg.monitoring, name, e, time.monotonic() - t0)
            raise
        monitoring.report_result(cfg.monitoring, result)
        results.append(result)
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
    failed = [r for r in results if r.status == "failed"]
    # a --only snapshot is "partial" but succeeded: only failed sources count here
    partial = [r for r in results if any(sr.status == "failed" for sr in r.sources)]
    if failed and len(failed) == len(results):
        raise SnapshotError(
            "; ".join(f"snapshot of {r.host} failed: no source could be saved" for r in failed)
        )
    if failed or partial:
        raise PartialFailure(
            "some sources failed: "
            + ", ".join(f"{r.host}/{s.name}" for r in results for s in r.sources if s.error)
        )


def register(cli: click.Group) -> None:
    cli.add_command(init_cmd)
    cli.add_command(snapshot_cmd)
