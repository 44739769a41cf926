"""`vkbackup dump SNAPSHOT SOURCE PATH` / `--table T`: one file, one directory or
one table out of a snapshot, on standard output or into `-o FILE`.

A file comes out as its bytes, a directory as a tar (names as in the snapshot),
a table as the SQL `pg_restore --data-only` writes. The bytes are not printed
on a terminal (they may hold escape sequences, or be binary): redirect, pipe,
or give -o. With -o the output goes to a temporary file beside FILE (mode
0600) that is renamed to FILE only once everything was written and every
object read was verified, so FILE is never a half-written or unverified copy.
On standard output, an error after the first byte (exit 1) means: discard
what was written.

A secret source (a `files` source with `secret = true`, the `host` source) is
never written to a file here (-o is refused, exit 2): its plaintext must not
land on the backup machine's disk. Pipe it to where it belongs instead
(`| ssh HOST 'cat > PATH'`); where standard output goes is the operator's call.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import click

from vkbackup.cli.context import AppContext, pass_app
from vkbackup.cli.options import check_host, identity_option, passphrase_file
from vkbackup.errors import UsageError


def refuse_terminal(path: str | None) -> None:
    """Raise UsageError if the output would be a terminal (no -o, stdout a TTY)."""
    if path is None and sys.stdout.isatty():
        raise UsageError(
            "refusing to write a snapshot's bytes to a terminal: redirect them "
            "(> FILE, | less) or give -o FILE"
        )


@contextlib.contextmanager
def output(path: str | None) -> Iterator[Callable[[bytes], object]]:
    """A writer to standard output, or to *path* through a temporary file that is
    renamed over it only if the block ends without an error."""
    if path is None:
        refuse_terminal(path)
        out: BinaryIO = sys.stdout.buffer
        yield out.write
        out.flush()
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f.write
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@click.command("dump")
@click.argument("snapshot")
@click.argument("source")
@click.argument("path", required=False)
@click.option(
    "--table",
    metavar="T",
    help="A table of a postgres SOURCE ('schema.table', or 'table' if one schema has it).",
)
@click.option(
    "--output", "-o", "out", metavar="FILE", help="Write to FILE (complete or not at all)."
)
@click.option("--host", "host", metavar="NAME", help="Snapshots of this host (for 'latest').")
@identity_option
@passphrase_file
@pass_app
def dump_cmd(
    app: AppContext,
    snapshot: str,
    source: str,
    path: str | None,
    table: str | None,
    out: str | None,
    host: str | None,
    identity: str | None,
    passphrase_file: str | None,
) -> None:
    """Write one PATH of SOURCE as it is in SNAPSHOT (a file's bytes; a directory
    as a tar), or with --table one table's data as SQL (a local pg_restore of at
    least the dump's major version does it).

    \b
    vkbackup dump latest caddy /etc/caddy/Caddyfile > Caddyfile
    vkbackup dump 20240501T0300Z app-data uploads -o uploads.tar
    vkbackup dump latest chatwoot-db --table public.contacts > contacts.sql
    """
    from vkbackup.actions.browse import dump_path, dump_table, load_tree, open_source
    from vkbackup.catalog import resolve
    from vkbackup.transport.local import LocalTransport

    if (path is None) == (table is None):
        raise UsageError("give one PATH, or --table T for a database source")
    refuse_terminal(out)
    storage = app.storage()
    manifest = resolve(storage, snapshot, check_host(host))
    ids = app.identities(identity, passphrase_file)
    view = open_source(storage, manifest, ids, source)
    if out is not None and is_secret(app, manifest.host, view.name, view.type, view.meta):
        raise UsageError(
            f"source {source!r} is secret: -o would write its plaintext to this machine's disk",
            hint=f"pipe it where it belongs: vkbackup dump {snapshot} {source} PATH "
            "| ssh HOST 'cat > PATH'",
        )
    if table is not None:
        with output(out) as write:
            dump_table(storage, view, ids, table, LocalTransport(), write)
        return
    assert path is not None
    tree = load_tree(storage, view, ids)
    with output(out) as write:
        dump_path(storage, view, ids, tree, path, write)


def is_secret(app: AppContext, host_name: str, name: str, kind: str, meta: object) -> bool:
    """True for a source whose plaintext must never land on this machine's disk: a
    host source, or one the snapshot recorded as secret, or the config now marks so
    (a snapshot taken before `secret = true` was added)."""
    from vkbackup.sources import files

    if kind == "host" or (isinstance(meta, files.Meta) and meta.secret):
        return True
    hcfg = app.config().hosts.get(host_name)
    return hcfg is not None and any(s.name == name and s.secret for s in hcfg.sources)


def register(cli: click.Group) -> None:
    cli.add_command(dump_cmd)
