"""`vkbackup verify [SNAPSHOT | --latest | --all]`: read every object back.

Each object is checked against the manifest (size, sha256) and, unless
--no-decrypt, decrypted to its end, which is what proves it: age
authenticates every chunk. --deep goes further and restores each database
dump into a throwaway server to compare row counts. The outcome is recorded
in the storage, where `list` shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import (
    check_host,
    host_option,
    identity_option,
    json_output,
    limits,
    passphrase_file,
)
from vkbackup.errors import UsageError

if TYPE_CHECKING:
    from vkbackup.crypto import Identity


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
@click.option(
    "--deep-image",
    metavar="IMAGE",
    help="The PostgreSQL image --deep starts (default: the recorded one, if it is an "
    "official postgres:<major> image of the recorded major; say which for pgvector etc.).",
)
@identity_option
@limits
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
    deep_image: str | None,
    identity: str | None,
    passphrase_file: str | None,
    as_json: bool,
    limit_upload: int | None,
    limit_download: int | None,
) -> None:
    """Read every object back, check size and sha256 against the manifest, and
    decrypt it to the end (age authenticates every chunk).

    The result is recorded in the storage (verify/<host>/<id>.json) and shown by
    `list`. Exit codes: 0 all good, 1 any object bad (each one is named).
    """
    from vkbackup.actions.verify import SnapshotVerify, failure, run_verify, select_snapshots
    from vkbackup.cli.outcomes import verify_outcomes

    if deep and no_decrypt:
        raise UsageError("--deep needs the private key: it contradicts --no-decrypt")
    if deep_image is not None and not deep:
        raise UsageError("--deep-image goes with --deep")
    if no_decrypt and identity:
        raise UsageError("--no-decrypt and --identity contradict each other")
    cfg = app.config()
    app.limit_transfer(limit_upload, limit_download)
    storage = app.storage()
    targets = select_snapshots(storage, snapshot, latest=latest, all_=all_, host=check_host(host))
    ids: Sequence[Identity] | None = None
    if not no_decrypt:
        loader = app.identity_loader(identity, passphrase_file)
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
        from vkbackup.actions.verify import make_deep_check
        from vkbackup.common import parse_target

        where = deep_on
        if where is None:
            hosts = sorted({h for h, _ in targets})
            if len(hosts) != 1 or hosts[0] not in cfg.hosts:
                raise UsageError("--deep: say on which host to run the throwaway server (--on)")
            where = hosts[0]
        deep_check = make_deep_check(parse_target(cfg, where), app.connect, deep_image)
    results = app.monitored_job(
        "verify",
        sorted({h for h, _ in targets}),
        lambda: run_verify(storage, targets, identities=ids, on_result=show, deep_check=deep_check),
        verify_outcomes,
    )
    if as_json:
        emit_json([r.to_json() for r in results])
    err = failure(results)
    if err is not None:
        raise err


def register(cli: click.Group) -> None:
    cli.add_command(verify_cmd)
