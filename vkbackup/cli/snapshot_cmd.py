"""`vkbackup init HOST` and `vkbackup snapshot [HOST]`."""

from __future__ import annotations

import click

from vkbackup.cli.options import dry_run, json_output, yes
from vkbackup.errors import NotImplementedYetError


@click.command("init")
@click.argument("host")
@click.option("--out", metavar="PATH", help="Write the discovered config here.")
@yes
def init_cmd(host: str, out: str | None, yes: bool) -> None:
    """Connect to HOST (user@address[:port]) and write a config of what it runs."""
    raise NotImplementedYetError("init is not implemented yet")


@click.command("snapshot")
@click.argument("host", required=False)
@click.option("--only", multiple=True, metavar="SOURCE", help="Only these sources.")
@click.option("--break-lock", is_flag=True, help="Take over a stale lock.")
@dry_run
@json_output
def snapshot_cmd(
    host: str | None, only: tuple[str, ...], break_lock: bool, dry_run: bool, as_json: bool
) -> None:
    """Stream every source of HOST (default: every configured host) into a snapshot."""
    raise NotImplementedYetError("snapshot is not implemented yet")


def register(cli: click.Group) -> None:
    cli.add_command(init_cmd)
    cli.add_command(snapshot_cmd)
