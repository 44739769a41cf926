"""`vkbackup show SNAPSHOT`: one snapshot's manifest.

The public part needs no key; the private part (files, row counts, server
versions, downtime, host facts) is opened only when an identity is
configured or given, and says why when it stays sealed.
"""

from __future__ import annotations

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import (
    check_host,
    host_option,
    identity_option,
    json_output,
    passphrase_file,
)
from vkbackup.textsafe import printable


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
    from vkbackup.actions.list_show import format_show, show_snapshot
    from vkbackup.common import utcnow

    cfg = app.config()
    storage = app.storage()
    loader = None if public else app.identity_loader(identity, passphrase_file)
    if public:
        reason = "not opened (--public)"
    else:
        reason = f"{cfg.source_file or '(no config file)'}: encryption.identity is not set"
    result = show_snapshot(
        storage, snapshot, host=check_host(host), load_identities=loader, sealed_reason=reason
    )
    now = utcnow()
    if as_json:
        emit_json(result.to_json(now))
        return
    for line in format_show(result, now):
        click.echo(printable(line))


def register(cli: click.Group) -> None:
    cli.add_command(show_cmd)
