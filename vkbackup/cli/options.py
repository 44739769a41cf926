"""Options shared by several commands, defined once (pip-tools style), and the
checks of arguments several commands take."""

from __future__ import annotations

import click

from vkbackup.errors import UsageError

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
identity_option = click.option(
    "--identity", "-i", metavar="PATH", help="Identity file (default: encryption.identity)."
)
host_option = click.option("--host", "host", metavar="NAME", help="Only snapshots of this host.")


def check_host(host: str | None) -> str | None:
    """Given a --host or HOST argument, return it; raise UsageError if it cannot be a host."""
    from vkbackup import layout

    if host is not None and not layout.NAME_RE.match(host):
        raise UsageError(f"{host!r} is not a valid host name")
    return host
