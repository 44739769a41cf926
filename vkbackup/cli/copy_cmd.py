"""`vkbackup copy [SNAPSHOT | --all] [--to NAME]`: put snapshots into the [[copies]] too.

The source is the storage the global --storage selects ([storage] by
default); the destinations are the copies named by --to, else every copy but
the source (each must exist: a copy's local directory is never created).
Nothing is decrypted, so no identity is needed. Each run is reported to
monitoring as the job "copy" ("copy-NAME" when the source is --storage NAME).
`copy_snapshots` is also what `snapshot` runs after each snapshot when
[snapshot] copy_after is set.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import check_host, dry_run, host_option, json_output, limits
from vkbackup.errors import UsageError

if TYPE_CHECKING:
    from vkbackup.actions.copy import CopyResult


def destination_names(app: AppContext, to: Sequence[str]) -> list[str]:
    """Given the --to names (none: every copy), return the copies to write to.
    Raise UsageError if the config has no [[copies]], a name is unknown (the
    message lists the configured ones), or a destination is the source."""
    cfg = app.config()
    if not cfg.copies:
        raise UsageError(
            f"{cfg.source_file}: no [[copies]] configured: nowhere to copy to",
            hint='add a [[copies]] table with name = "..." and the keys of [storage]',
        )
    if not to:
        others = [c.name for c in cfg.copies if c.name != app.storage_name]
        if not others:
            raise UsageError(
                f"the only copy, {app.storage_name!r}, is the source: nowhere to copy to"
            )
        return others
    names = list(dict.fromkeys(to))
    for n in names:
        app.copy_config(n)  # raises UsageError listing the copies
        if n == app.storage_name:
            raise UsageError(f"copy {n!r} is the source (--storage {n}): it cannot be copied to")
    return names


def copy_snapshots(
    app: AppContext,
    snapshots: Sequence[tuple[str, str]],
    to: Sequence[str],
    *,
    dry_run: bool = False,
    break_lock: bool = False,
    check_existing: bool = False,
    as_json: bool = False,
) -> CopyResult:
    """Copy *snapshots* ((host, id), oldest first) from app.storage() to the
    copies *to* (none: every copy) and return the result (*check_existing*:
    read back what is already there, `actions.copy.copy_snapshot`); a real run
    is reported to monitoring as the job "copy" ("copy-NAME" from the copy
    --storage NAME)."""
    from vkbackup.actions.copy import run_copy
    from vkbackup.cli.outcomes import copy_outcomes
    from vkbackup.signed_storage import SignedStorage

    names = destination_names(app, to)
    source = app.storage()
    assert isinstance(source, SignedStorage)  # the composition root always signs
    destinations = {n: app.copy_backend(n) for n in names}
    run = functools.partial(
        run_copy,
        source,
        destinations,
        snapshots,
        dry_run=dry_run,
        break_lock=break_lock,
        check_existing=check_existing,
        progress=app.progress(as_json),
    )
    if dry_run:  # did nothing: nothing to report to monitoring
        return run()
    hosts = sorted({h for h, _ in snapshots})
    return app.monitored_job("copy", hosts, run, copy_outcomes)


@click.command("copy")
@click.argument("snapshot", required=False)
@click.option("--all", "all_", is_flag=True, help="Every snapshot (of --host), oldest first.")
@click.option(
    "--to",
    "to",
    multiple=True,
    metavar="NAME",
    help="The [[copies]] storage to copy to (repeatable; default: every copy).",
)
@host_option
@click.option("--break-lock", is_flag=True, help="Take over a stale lock of the host in a copy.")
@click.option(
    "--check-existing",
    is_flag=True,
    help="Read back and hash every object already in a copy (of already copied snapshots "
    "too) and copy again one that does not match, instead of trusting its size.",
)
@limits
@dry_run
@json_output
@pass_app
def copy_cmd(
    app: AppContext,
    snapshot: str | None,
    all_: bool,
    to: tuple[str, ...],
    host: str | None,
    break_lock: bool,
    check_existing: bool,
    limit_upload: int | None,
    limit_download: int | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Copy SNAPSHOT (default: latest, of each host) or --all into the [[copies]]
    storages, as stored: no private key needed, nothing decrypted.

    Every object's size and sha256 is checked against the manifest on the way
    (a bad one never becomes visible in the copy); objects already there with
    the right size are skipped (their Object Lock retention extended), and
    snapshots already copied are left alone: what a previous copy wrote was
    checked on the way in. --check-existing reads back and hashes what is
    already there too, and copies again what does not match (`vkbackup
    --storage NAME verify` checks a copy without writing). The signed manifest
    is written last, byte for byte, once every object is there, so a killed
    run is completed by running it again. The source is [storage], or the
    copy the global --storage names. --limit-upload paces the writes into the
    copies, --limit-download the reads from the source. A copy's local
    directory must exist (it is never created).

    Exit codes: 0 all copied, 1 failed, 3 some copies failed, 10 a storage is
    unreachable, 11 a copy's host lock is held.
    """
    from vkbackup.actions.copy import select

    names = destination_names(app, to)  # usage errors before anything is read
    app.limit_transfer(limit_upload, limit_download)
    snapshots = select(app.storage(), snapshot, host=check_host(host), all_=all_)
    result = copy_snapshots(
        app,
        snapshots,
        names,
        dry_run=dry_run,
        break_lock=break_lock,
        check_existing=check_existing,
        as_json=as_json,
    )
    if as_json:
        emit_json(result.to_json())
    elif app.verbosity >= 0:
        for item in result.items:
            click.echo(item.summary())
    err = result.failure()
    if err is not None:
        raise err


def register(cli: click.Group) -> None:
    cli.add_command(copy_cmd)
