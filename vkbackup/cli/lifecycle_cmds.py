"""`vkbackup list`, `show`, `verify`, `prune`: thin commands over
`vkbackup.actions.list_show`, `.verify` and `.prune`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import dry_run, json_output, passphrase_file
from vkbackup.crypto import Identity
from vkbackup.errors import UsageError

identity_option = click.option(
    "--identity", "-i", metavar="PATH", help="Identity file (default: encryption.identity)."
)
host_option = click.option("--host", "host", metavar="NAME", help="Only snapshots of this host.")


def _check_host(host: str | None) -> str | None:
    """Given a --host or HOST argument, return it; raise UsageError if it cannot be a host."""
    from vkbackup import layout

    if host is not None and not layout.NAME_RE.match(host):
        raise UsageError(f"{host!r} is not a valid host name")
    return host


def _identity_loader(
    app: AppContext, identity: str | None, passphrase_path: str | None
) -> Callable[[], Sequence[Identity]] | None:
    """A loader of the private keys, or None when no identity is configured."""
    cfg = app.config()
    if identity is None and cfg.encryption.identity is None:
        return None

    def load() -> Sequence[Identity]:
        from vkbackup.actions.common import identities
        from vkbackup.crypto.keys import read_passphrase

        return identities(cfg, lambda: read_passphrase(passphrase_path), identity)

    return load


@click.command("list")
@click.argument("host", required=False)
@json_output
@pass_app
def list_cmd(app: AppContext, host: str | None, as_json: bool) -> None:
    """List snapshots: id, host, time, age, size (new and reused), sources,
    complete or partial, last verified. Needs no private key."""
    from vkbackup.actions.common import utcnow
    from vkbackup.actions.list_show import format_list, list_rows
    from vkbackup.storage import open_storage

    storage = open_storage(app.config().storage)
    rows = list_rows(storage, _check_host(host))
    now = utcnow()
    if as_json:
        emit_json([r.to_json(now) for r in rows])
        return
    for line in format_list(rows, now):
        click.echo(line)


@click.command("show")
@click.argument("snapshot")
@host_option
@click.option("--public", is_flag=True, help="Only the public part (no private key asked).")
@identity_option
@passphrase_file
@json_output
@pass_app
def show_cmd(
    app: AppContext,
    snapshot: str,
    host: str | None,
    public: bool,
    identity: str | None,
    passphrase_file: str | None,
    as_json: bool,
) -> None:
    """Show one snapshot's manifest (SNAPSHOT: an id, a unique prefix, or latest).

    The public part always; the private part (files, row counts, server
    versions, downtime, host facts) when encryption.identity is configured.
    """
    from vkbackup.actions.common import utcnow
    from vkbackup.actions.list_show import format_show, show_snapshot
    from vkbackup.storage import open_storage

    cfg = app.config()
    storage = open_storage(cfg.storage)
    loader = None if public else _identity_loader(app, identity, passphrase_file)
    if public:
        reason = "not opened (--public)"
    else:
        reason = f"{cfg.source_file or '(no config file)'}: encryption.identity is not set"
    result = show_snapshot(
        storage, snapshot, host=_check_host(host), load_identities=loader, sealed_reason=reason
    )
    now = utcnow()
    if as_json:
        emit_json(result.to_json(now))
        return
    for line in format_show(result, now):
        click.echo(line)


@click.command("verify")
@click.argument("snapshot", required=False)
@click.option("--latest", is_flag=True, help="The newest complete snapshot of each host (default).")
@click.option("--all", "all_", is_flag=True, help="Every snapshot; shared objects are read once.")
@host_option
@click.option(
    "--no-decrypt",
    is_flag=True,
    help="Check size and sha256 only: needs no private key, proves no age authentication.",
)
@click.option(
    "--deep",
    is_flag=True,
    help="Also restore each database dump into a throwaway server and compare row counts.",
)
@click.option(
    "--on",
    "deep_on",
    metavar="HOST",
    help="Where --deep runs its throwaway server (configured host or user@addr[:port]; "
    "default: the snapshot's own host).",
)
@identity_option
@passphrase_file
@json_output
@pass_app
def verify_cmd(
    app: AppContext,
    snapshot: str | None,
    latest: bool,
    all_: bool,
    host: str | None,
    no_decrypt: bool,
    deep: bool,
    deep_on: str | None,
    identity: str | None,
    passphrase_file: str | None,
    as_json: bool,
) -> None:
    """Read every object back, check size and sha256 against the manifest, and
    decrypt it to the end (age authenticates every chunk).

    The result is recorded in the storage (verify/<host>/<id>.json) and shown by
    `list`. Exit codes: 0 all good, 1 any object bad (each one is named).
    """
    from vkbackup.actions.verify import SnapshotVerify, failure, run_verify, select_snapshots
    from vkbackup.storage import open_storage

    if deep and no_decrypt:
        raise UsageError("--deep needs the private key: it contradicts --no-decrypt")
    if no_decrypt and identity:
        raise UsageError("--no-decrypt and --identity contradict each other")
    cfg = app.config()
    storage = open_storage(cfg.storage)
    targets = select_snapshots(storage, snapshot, latest=latest, all_=all_, host=_check_host(host))
    ids: Sequence[Identity] | None = None
    if not no_decrypt:
        loader = _identity_loader(app, identity, passphrase_file)
        if loader is None:
            raise UsageError(
                f"{cfg.source_file or '(no config file)'}: encryption.identity is not set: "
                "verify needs the private key to decrypt",
                hint="set encryption.identity, pass --identity, or check size and sha256 only "
                "with --no-decrypt",
            )
        ids = loader()

    def show(r: SnapshotVerify) -> None:
        if as_json or app.verbosity < 0:
            return
        click.echo(r.summary())
        for b in r.bad:
            click.echo(f"  {b.problem:8} {b.detail}")

    deep_check = None
    if deep:
        from vkbackup.actions.common import parse_target
        from vkbackup.actions.deep_verify import make_deep_check
        from vkbackup.transport.ssh import connect

        where = deep_on
        if where is None:
            hosts = sorted({h for h, _ in targets})
            if len(hosts) != 1 or hosts[0] not in cfg.hosts:
                raise UsageError("--deep: say on which host to run the throwaway server (--on)")
            where = hosts[0]
        deep_check = make_deep_check(parse_target(cfg, where), connect)
    results = run_verify(storage, targets, identities=ids, on_result=show, deep_check=deep_check)
    if as_json:
        emit_json([r.to_json() for r in results])
    err = failure(results)
    if err is not None:
        raise err


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
    snapshot uses, never one under Object Lock. Prints what it keeps and why."""
    from vkbackup.actions.prune import format_prune, run_prune
    from vkbackup.storage import open_storage

    cfg = app.config()
    storage = open_storage(cfg.storage)
    report = run_prune(
        storage,
        cfg.retention,
        hosts=[host] if host is not None and _check_host(host) else None,
        dry_run=dry_run,
        break_lock=break_lock,
    )
    if as_json:
        emit_json(report.to_json())
    elif app.verbosity >= 0:
        for line in format_prune(report):
            click.echo(line)
    err = report.failure()
    if err is not None:
        raise err


def register(cli: click.Group) -> None:
    for cmd in (list_cmd, show_cmd, verify_cmd, prune_cmd):
        cli.add_command(cmd)
