"""Options shared by several commands, defined once (pip-tools style)."""

from __future__ import annotations

import click

json_output = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON on standard output."
)
dry_run = click.option("--dry-run", is_flag=True, help="Print what would be done, and do nothing.")
yes = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
passphrase_file = click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True),
    help="Read the passphrase from this file (else $VKBACKUP_PASSPHRASE, else a TTY prompt).",
)
