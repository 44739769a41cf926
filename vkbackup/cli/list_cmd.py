"""`vkbackup list [HOST | --host HOST]`: every snapshot with its size, state and last verify.

Reads only the plaintext part of the manifests, so it needs no private key
and works on a machine that holds only public keys.
"""

from __future__ import annotations

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import host_alias, json_output, one_host
from vkbackup.textsafe import printable


@click.command("list")
@click.argument("host", required=False)
@host_alias
@json_output
@pass_app
def list_cmd(app: AppContext, host: str | None, host_option: str | None, as_json: bool) -> None:
    """List snapshots: id, host, time, age, size (new and reused), sources,
    complete or partial, last verified. Needs no private key."""
    from vkbackup.actions.list_show import format_list, list_rows
    from vkbackup.common import utcnow

    host = one_host(host, host_option)
    rows = list_rows(app.storage(), host)
    now = utcnow()
    if as_json:
        emit_json([r.to_json(now) for r in rows])
        return
    for line in format_list(rows, now):
        click.echo(printable(line))


def register(cli: click.Group) -> None:
    cli.add_command(list_cmd)
