"""`vkbackup restore [SNAPSHOT|latest] --to HOST`."""

from __future__ import annotations

import click

from vkbackup.cli.options import dry_run, json_output, yes
from vkbackup.errors import NotImplementedYetError


@click.command("restore")
@click.argument("snapshot", default="latest")
@click.option(
    "--to", "to", required=True, metavar="HOST", help="Configured host or user@addr[:port]."
)
@click.option("--playbook", metavar="FILE", help="A restore playbook (TOML).")
@click.option("--only", multiple=True, metavar="STEP_OR_SOURCE")
@click.option("--force", is_flag=True, help="Allow overwriting a target that is not empty.")
@dry_run
@yes
@json_output
def restore_cmd(
    snapshot: str,
    to: str,
    playbook: str | None,
    only: tuple[str, ...],
    force: bool,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Rebuild the stack of SNAPSHOT (default: latest) on HOST."""
    raise NotImplementedYetError("restore is not implemented yet")


def register(cli: click.Group) -> None:
    cli.add_command(restore_cmd)
