"""`vkbackup storage check`."""

from __future__ import annotations

import click

from vkbackup.cli.options import json_output
from vkbackup.errors import NotImplementedYetError


@click.group("storage")
def storage_group() -> None:
    """Inspect the configured storage."""


@storage_group.command("check")
@json_output
def storage_check(as_json: bool) -> None:
    """Probe the storage: write, read back, list, delete, multipart, checksums, Object Lock."""
    raise NotImplementedYetError("storage check is not implemented yet")


def register(cli: click.Group) -> None:
    cli.add_command(storage_group)
