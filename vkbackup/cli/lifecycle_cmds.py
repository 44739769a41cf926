"""`vkbackup list`, `show`, `verify`, `prune`, `drill`."""

from __future__ import annotations

import click

from vkbackup.cli.options import dry_run, json_output
from vkbackup.errors import NotImplementedYetError


@click.command("list")
@click.argument("host", required=False)
@json_output
def list_cmd(host: str | None, as_json: bool) -> None:
    """List snapshots (id, host, time, size, sources, complete or partial)."""
    raise NotImplementedYetError("list is not implemented yet")


@click.command("show")
@click.argument("snapshot")
@json_output
def show_cmd(snapshot: str, as_json: bool) -> None:
    """Show one snapshot's manifest."""
    raise NotImplementedYetError("show is not implemented yet")


@click.command("verify")
@click.argument("snapshot", required=False)
@click.option("--latest", is_flag=True)
@click.option("--all", "all_", is_flag=True)
@click.option("--deep", is_flag=True, help="Also restore the database into a throwaway one.")
@json_output
def verify_cmd(snapshot: str | None, latest: bool, all_: bool, deep: bool, as_json: bool) -> None:
    """Read every object back, decrypt it, check size and sha256 against the manifest."""
    raise NotImplementedYetError("verify is not implemented yet")


@click.command("prune")
@dry_run
@json_output
def prune_cmd(dry_run: bool, as_json: bool) -> None:
    """Delete snapshots the retention policy does not keep."""
    raise NotImplementedYetError("prune is not implemented yet")


@click.command("drill")
@click.option("--to", "to", required=True, metavar="HOST")
@click.option("--report", metavar="DIR")
@click.option("--teardown", is_flag=True)
@json_output
def drill_cmd(to: str, report: str | None, teardown: bool, as_json: bool) -> None:
    """Restore the latest snapshot onto a scratch host and measure RTO and RPO."""
    raise NotImplementedYetError("drill is not implemented yet")


def register(cli: click.Group) -> None:
    for cmd in (list_cmd, show_cmd, verify_cmd, prune_cmd, drill_cmd):
        cli.add_command(cmd)
