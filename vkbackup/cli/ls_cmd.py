"""`vkbackup ls SNAPSHOT [SOURCE [PATH]]`: what a snapshot holds, without restoring it.

Without SOURCE, the snapshot's sources (the public part: no key needed). With
a files, docker-volume or host SOURCE, its paths as they are in that snapshot
(an incremental chain applied, deletions included), like `tar -tv`; PATH
narrows it to that path and below. With a postgres SOURCE, its tables and the
row counts recorded with the dump. Names are printed escaped
(`vkbackup.textsafe`); --json prints them exactly.
"""

from __future__ import annotations

import stat
from datetime import UTC, datetime

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import check_host, identity_option, json_output, passphrase_file
from vkbackup.errors import UsageError
from vkbackup.restore.tartree import HARDLINK, SYMLINK, Entry
from vkbackup.textsafe import printable


def format_entry(e: Entry, shown: str) -> str:
    """One line per path, like `tar -tv`: type and mode, uid/gid, size, mtime (UTC),
    path (*shown*: already escaped), and where a link points."""
    when = datetime.fromtimestamp(e.mtime, UTC).strftime("%Y-%m-%d %H:%M:%S")
    mode = stat.filemode(e.st_mode)
    if e.type == HARDLINK:
        mode = "h" + mode[1:]
    line = f"{mode} {e.uid}/{e.gid} {e.size:>12} {when} {shown}"
    if e.type == SYMLINK:
        line += f" -> {printable(e.link)}"
    elif e.type == HARDLINK:
        line += f" link to {printable('/' + e.link if shown.startswith('/') else e.link)}"
    return line


@click.command("ls")
@click.argument("snapshot")
@click.argument("source", required=False)
@click.argument("path", required=False)
@click.option("--host", "host", metavar="NAME", help="Snapshots of this host (for 'latest').")
@identity_option
@passphrase_file
@json_output
@pass_app
def ls_cmd(
    app: AppContext,
    snapshot: str,
    source: str | None,
    path: str | None,
    host: str | None,
    identity: str | None,
    passphrase_file: str | None,
    as_json: bool,
) -> None:
    """List a snapshot's sources, one source's paths as they are in SNAPSHOT
    (latest, an id or a unique prefix), or a database's tables with row counts.

    \b
    vkbackup ls latest                       sources: name, type, status
    vkbackup ls latest caddy /etc/caddy      paths: mode uid/gid size mtime path
    vkbackup ls latest chatwoot-db           tables and row counts
    """
    from vkbackup.actions.browse import list_sources, list_tables, load_tree, open_source, select

    storage = app.storage()
    manifest, sources = list_sources(storage, snapshot, check_host(host))
    if source is None:
        if as_json:
            emit_json(
                {"snapshot": manifest.id, "host": manifest.host,
                 "sources": [s.to_json() for s in sources]}
            )  # fmt: skip
            return
        click.echo(f"snapshot {manifest.id} of {manifest.host}:")
        for s in sources:
            click.echo(printable(f"  {s.name:30} {s.type:14} {s.status}"))
        return
    ids = app.identities(identity, passphrase_file)
    view = open_source(storage, manifest, ids, source)
    if view.type == "postgres":
        if path is not None:
            raise UsageError(f"{view.where} is a database: no PATH (its tables are listed)")
        tables = list_tables(view)
        if as_json:
            emit_json(
                {"snapshot": manifest.id, "source": view.name,
                 "tables": [t.to_json() for t in tables]}
            )  # fmt: skip
            return
        for t in tables:
            click.echo(f"{t.rows:>12} {printable(t.table)}")
        return
    tree = load_tree(storage, view, ids)
    entries = select(view, tree, path)
    if as_json:
        emit_json(
            {"snapshot": manifest.id, "source": view.name, "type": view.type,
             "rooted": view.rooted, "entries": [e.to_json() for e in entries]}
        )  # fmt: skip
        return
    for e in entries:
        click.echo(format_entry(e, view.shown(e.path)))


def register(cli: click.Group) -> None:
    cli.add_command(ls_cmd)
