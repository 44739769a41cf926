"""Options shared by several commands, defined once (pip-tools style), and the
checks of arguments several commands take."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from vkbackup.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])

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
    "--identity",
    "-i",
    metavar="PATH",
    help="Identity file (default: $VKBACKUP_IDENTITY, else encryption.identity).",
)
host_option = click.option("--host", "host", metavar="NAME", help="Only snapshots of this host.")
#: the --host of a command that also takes the host as its HOST argument
host_alias = click.option(
    "--host", "host_option", metavar="NAME", help="The host (the same as the HOST argument)."
)

#: bandwidth limits (KiB/s; 0: none), over [transfer]: `AppContext.limit_transfer`
limit_upload = click.option(
    "--limit-upload",
    type=click.IntRange(min=0),
    metavar="KIB",
    help="Put at most KIB KiB/s into storage (0: no limit; default: transfer.limit_upload_kib).",
)
limit_download = click.option(
    "--limit-download",
    type=click.IntRange(min=0),
    metavar="KIB",
    help="Read at most KIB KiB/s from storage (0: no limit; default: transfer.limit_download_kib).",
)


def limits(f: F) -> F:
    """Both bandwidth options (--limit-upload, --limit-download)."""
    return limit_upload(limit_download(f))


def check_host(host: str | None) -> str | None:
    """Given a --host or HOST argument, return it. Raise UsageError if it cannot
    be a host name, or (run inside a command) if the config lacks it
    (`AppContext.require_host`: it names the config file and where the lookup
    looked; a config with no [hosts] at all, on a machine that only restores,
    takes any)."""
    from vkbackup import layout
    from vkbackup.cli.context import AppContext

    if host is None:
        return None
    if not layout.NAME_RE.match(host):
        raise UsageError(f"{host!r} is not a valid host name")
    ctx = click.get_current_context(silent=True)
    app = ctx.find_object(AppContext) if ctx is not None else None
    return app.require_host(host) if app is not None else host


def one_host(positional: str | None, option: str | None) -> str | None:
    """Given a command's HOST argument and its --host option, return the host
    (checked as check_host does). Raise UsageError if both are given and differ."""
    if positional is not None and option is not None and positional != option:
        raise UsageError(
            f"two hosts given: {positional!r} (HOST) and {option!r} (--host): give one"
        )
    return check_host(positional if positional is not None else option)
