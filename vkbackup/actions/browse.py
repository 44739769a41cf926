"""`vkbackup ls`, `vkbackup dump` and `vkbackup restore --into`: look inside a
snapshot and take one file, one directory or one table back, without a full
restore and without touching anything else.

    storage get -> verify -> age decrypt -> decompress -> tar guard -> tarfile ("r|")
        pass 1: every chain level, headers only -> the tree (vkbackup.restore.tartree)
        pass 2: only the levels holding wanted content -> stdout / a tar -> target

Why two passes. A docker volume is a GNU incremental chain: whether a path
exists in the newest snapshot, and which level last carried its content, is
known only once every level's dumpdirs were applied. Holding the content of
every candidate until then would buffer whole files; re-reading the few levels
that hold the wanted members costs a second download of those objects instead,
and memory stays the tree's metadata. Every object read, in either pass, is
read to its end, so its size and sha256 (ciphertext and plaintext) are checked
before the command reports success.

`restore --into DIR` extracts on the target into a DIR that is new (made,
mode 0700) or an empty real directory, checked before anything is written:
`tar -x` follows symlinks already under DIR, so anything there could send the
files elsewhere. There is no override. An error after the first byte leaves
DIR with a partial copy, and says so.

A database is not a tar: `dump --table` streams the pg_dump custom archive into
a local `pg_restore --data-only` (argv built by `pg_restore_argv`, the table
name checked by `vkbackup.names` first), whose SQL goes to the output. A bare
table name is resolved to its schema from the snapshot's row counts first
(`resolve_table`): pg_restore's --table alone takes it from every schema.

Nothing here opens storage or connects: the command hands in the storage, the
identities, and for `--into` the target's transport (`cli/context.py`).
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vkbackup import catalog, names
from vkbackup.crypto import Identity
from vkbackup.errors import (
    IntegrityError,
    RemoteCommandError,
    RestoreError,
    TransportError,
    UsageError,
    VkError,
)
from vkbackup.logs import get_logger
from vkbackup.manifest import Manifest, ObjectRecord
from vkbackup.restore.objects import PlainCheck, TarCheck, open_object
from vkbackup.restore.records import SourceMeta, read_private
from vkbackup.restore.session import plain_checks
from vkbackup.restore.targuard import GuardState, TarGuard
from vkbackup.restore.tartree import (
    DIR,
    Entry,
    IterReader,
    LevelTar,
    OpenLevel,
    Tree,
    content,
    content_size,
    norm,
    open_tar,
    tar_stream,
)
from vkbackup.sources import files, host, postgres
from vkbackup.storage.base import Storage
from vkbackup.streams import CHUNK, Readable, iter_chunks
from vkbackup.textsafe import printable
from vkbackup.transport.base import Transport, pipeline_argv

log = get_logger("browse")

TAR_SOURCES = ("files", "docker-volume", "host")
CHAIN_ROLES = ("tar", "tar-incremental")
Write = Callable[[bytes], object]


# -- what a snapshot holds --------------------------------------------------------


@dataclass(frozen=True)
class SourceRow:
    name: str
    type: str
    status: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "status": self.status}


def list_sources(
    storage: Storage, ref: str, host_name: str | None
) -> tuple[Manifest, list[SourceRow]]:
    """Given a snapshot reference, return its manifest and its sources (public part)."""
    m = catalog.resolve(storage, ref, host_name)
    return m, [SourceRow(s.name, s.type, s.status) for s in m.sources]


@dataclass
class SourceView:
    """One source of one snapshot, ready to be read: its record and its objects."""

    manifest: Manifest
    name: str
    type: str
    meta: SourceMeta | None
    objects: list[ObjectRecord]  # tar sources: the chain, level 0 first
    checks: dict[str, PlainCheck] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"snapshot {self.manifest.id} ({self.manifest.host}), source {self.name!r}"

    @property
    def rooted(self) -> bool:
        """Paths are the host's absolute paths (files, host), not a volume's own."""
        return self.type in ("files", "host")

    def shown(self, path: str) -> str:
        """A tree path as the user sees it: "/etc/x" for files and host, "dir/x" or
        "." for a volume; escaped for a terminal."""
        if self.rooted:
            return printable("/" + path)
        return printable(path or ".")


def open_source(
    storage: Storage, manifest: Manifest, identities: Sequence[Identity], name: str
) -> SourceView:
    """Given a manifest and a source name, return the source's view. Raise
    UsageError naming the snapshot's sources if it has none of that name,
    IntegrityError for a broken chain."""
    rec = next((s for s in manifest.sources if s.name == name), None)
    if rec is None:
        have = ", ".join(s.name for s in manifest.sources) or "none"
        raise UsageError(
            f"snapshot {manifest.id} ({manifest.host}) has no source {printable(name)!r} "
            f"(its sources: {have})"
        )
    private = read_private(manifest, identities)
    entry = private.sources.get(name)
    meta = entry.meta if entry is not None else None
    objs = [o for o in manifest.objects if o.source == name]
    view = SourceView(manifest, name, rec.type, meta, objs)
    if rec.type in TAR_SOURCES:
        chain = sorted((o for o in objs if o.role in CHAIN_ROLES), key=lambda o: o.chain)
        if not chain:
            raise RestoreError(f"{view.where}: no tar object (status {rec.status})")
        if [o.chain for o in chain] != list(range(len(chain))):
            have = ", ".join(f"{o.chain}: {o.key}" for o in chain)
            raise IntegrityError(f"{view.where}: broken incremental chain (levels: {have})")
        view.objects = chain
    view.checks, warnings = plain_checks(storage, manifest, identities)
    for w in warnings:
        log.warning("%s", w)
    return view


def _tar_check(view: SourceView, state: GuardState | None) -> TarCheck:
    """How the tar guard checks this source's tars, as restore checks them."""
    if isinstance(view.meta, files.Meta):
        return TarCheck.files(view.meta.paths, patterns=view.meta.patterns)
    if isinstance(view.meta, host.Meta):
        return TarCheck.files(view.meta.members)
    if view.type == "docker-volume":
        return TarCheck.volume(state)
    raise RestoreError(f"{view.where}: no record of its {view.type} source in the private part")


def _open_level(
    storage: Storage,
    view: SourceView,
    identities: Sequence[Identity],
    level: int,
    state: GuardState | None = None,
) -> LevelTar:
    """Chain level *level* of a tar source as a stream-mode tarfile: verified,
    decrypted, decompressed, through the tar guard. finish() reads the object to
    its end (so size, sha256 and the guard's end checks run); abort() only
    releases it."""
    obj = view.objects[level]
    stream = open_object(
        storage,
        obj,
        identities,
        decompress=True,
        tar=_tar_check(view, state),
        expect=view.checks.get(obj.key),
    )

    def finish() -> None:
        try:
            for _ in iter_chunks(stream, CHUNK):
                pass
        finally:
            stream.close()

    try:
        members = open_tar(stream)
    except BaseException:
        stream.close()
        raise
    return LevelTar(members, finish, stream.close)


def load_tree(storage: Storage, view: SourceView, identities: Sequence[Identity]) -> Tree:
    """Pass 1: read every level of the source's chain (headers only; every object
    read to its end and verified) and return the tree as the snapshot has it."""
    if view.type not in TAR_SOURCES:
        raise UsageError(
            f"{view.where} is a {view.type} source: only files, docker-volume and host "
            "sources hold paths"
        )
    tree = Tree()
    state = GuardState()  # one state along the chain, as restore has it
    for level, obj in enumerate(view.objects):
        tar = _open_level(storage, view, identities, level, state)
        try:
            tree.apply(level, tar.members, obj.key)
        except BaseException:
            tar.abort()
            raise
        tar.close()
    return tree


def select(view: SourceView, tree: Tree, path: str | None) -> list[Entry]:
    """The entries at *path* and below (all without a path), sorted. Raise
    RestoreError naming snapshot, source and path if the snapshot has none."""
    key = norm(path or "")
    found = tree.below(key)
    if not found and key:
        raise RestoreError(f"{view.where}: no path {view.shown(key)!r} in this snapshot")
    return found


# -- dump --------------------------------------------------------------------------


def _opener(
    storage: Storage, view: SourceView, identities: Sequence[Identity]
) -> Callable[[int], LevelTar]:
    return lambda level: _open_level(storage, view, identities, level)


def dump_path(
    storage: Storage,
    view: SourceView,
    identities: Sequence[Identity],
    tree: Tree,
    path: str,
    write: Write,
) -> Entry:
    """Pass 2: write one file's content as the snapshot has it (a directory: a tar
    of it and everything below, names as in the snapshot) through *write*; return
    its entry. Raise RestoreError for a missing path or a symlink."""
    found = select(view, tree, path)
    key = norm(path)
    top = tree.entries.get(key)
    opener = _opener(storage, view, identities)
    if top is None or top.type == DIR:
        for chunk in tar_stream(found, opener):
            write(chunk)
        return top or Entry(key, DIR, 0o755, 0, 0, 0, 0)
    if top.level < 0:  # a symlink
        raise RestoreError(
            f"{view.where}: {view.shown(key)!r} is a symlink to {printable(top.link)!r}: "
            "dump its target"
        )
    for _, data in content([top], opener):
        for chunk in iter_chunks(data, CHUNK):
            write(chunk)
    return top


# -- restore --into ----------------------------------------------------------------


#: the exit status of into_argv's script when it refuses DIR (tar -x exits 0, 1 or 2)
INTO_REFUSED = 3


def into_argv(into: str) -> list[str]:
    """The target's command: make DIR, extract the tar on stdin under it, modes and
    numeric owners kept. DIR is a positional argument, never shell text.

    DIR must be new or an empty real directory, checked before anything is
    written: `tar -x` follows symlinks already under DIR (and the tar puts files
    before the directories that hold them), so a DIR that holds anything, or is
    itself a symlink, could send the files elsewhere or overwrite what is
    there. A refusal exits INTO_REFUSED with its reason on stderr. A new DIR is
    made mode 0700 (its parents as mkdir -p makes them)."""
    script = (
        "d=$1\n"
        'refuse() { printf "refusing --into %s: %s\\n" "$d" "$1" >&2; '
        f"exit {INTO_REFUSED}; }}\n"
        'if [ -L "$d" ]; then refuse "it is a symlink; give a new directory"; fi\n'
        'if [ -e "$d" ]; then\n'
        '  [ -d "$d" ] || refuse "it exists and is not a directory; give a new directory"\n'
        '  first=$(find "$d" -mindepth 1 -maxdepth 1 -print -quit)\n'
        '  [ -z "$first" ] || refuse "it is not empty; give a new or an empty directory"\n'
        "else\n"
        '  err=$(mkdir -p -- "$(dirname -- "$d")" 2>&1) || refuse "cannot make its parent: $err"\n'
        '  err=$(mkdir -m 700 -- "$d" 2>&1) || refuse "cannot make it: $err"\n'
        "fi\n"
        'tar -x -p --numeric-owner -C "$d" -f -'
    )
    return [*pipeline_argv(script), "vkbackup-into", into]


def check_into(into: str) -> str:
    """Given --into, return it normalised. Raise UsageError unless it is an
    absolute directory other than /."""
    if not into.startswith("/") or "\0" in into:
        raise UsageError(f"--into {printable(into)!r}: give an absolute directory")
    clean = posixpath.normpath(into)
    if clean in ("/", "//"):
        raise UsageError("--into /: that is the live root; give a directory to put the files in")
    return clean


@dataclass
class IntoResult:
    snapshot: str
    source: str
    target: str
    into: str
    paths: list[str]
    entries: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def restore_into(
    storage: Storage,
    view: SourceView,
    identities: Sequence[Identity],
    tree: Tree,
    paths: Sequence[str],
    into: str,
    t: Transport,
) -> IntoResult:
    """Put *paths* (each with everything below it) as the snapshot has them under
    *into* on the target (put_into). Raise RestoreError for a missing path (before
    anything is sent) or a DIR the target refuses."""
    into = check_into(into)
    chosen: dict[str, Entry] = {}
    for p in paths:
        for e in select(view, tree, p):
            chosen[e.path] = e
    selected = [chosen[k] for k in sorted(chosen)]
    put_into(t, into, selected, _opener(storage, view, identities), view.where)
    return IntoResult(
        snapshot=view.manifest.id,
        source=view.name,
        target=t.name,
        into=into,
        paths=[view.shown(norm(p)) for p in paths],
        entries=len(selected),
        bytes=content_size(selected),
    )


def put_into(
    t: Transport, into: str, selected: list[Entry], open_level: OpenLevel, where: str
) -> None:
    """Stream *selected* as one tar, built here (tar_stream), checked again by the
    tar guard on its way out, into `tar -x` under *into* on the target
    (into_argv). Nothing outside *into* is written and nothing under it but those
    entries. Raise RestoreError, with nothing written, if the target refuses
    *into* (a symlink, or not a new or empty directory). Any other failure may
    leave a partial copy under *into*: its message says so, and the error keeps
    its type (and so its exit status)."""
    stream = TarGuard(
        IterReader(tar_stream(selected, open_level)),
        f"{where}: the tar for --into",
        absolute_symlinks=True,
    )
    try:
        t.feed(into_argv(into), stream)
    except RemoteCommandError as e:
        if e.exit_status == INTO_REFUSED:
            lines = e.stderr_tail.strip().splitlines()
            reason = lines[-1] if lines else f"refusing --into {into}"
            raise RestoreError(
                f"{t.name}: {printable(reason)}",
                hint="nothing was extracted; --into wants a directory that does not "
                "exist yet (it is made) or an empty one",
            ) from None
        _say_partial(e, t, into)
        raise
    except VkError as e:
        _say_partial(e, t, into)
        raise


def _say_partial(e: VkError, t: Transport, into: str) -> None:
    """Add to *e*'s message that *into* on the target may hold a partial copy."""
    e.args = (
        f"{e}\n  {printable(into)} on {t.name} may now hold a partial copy: delete it "
        "before trying again (a DIR that is not empty is refused)",
    )


# -- databases ---------------------------------------------------------------------


@dataclass(frozen=True)
class TableRow:
    table: str
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "rows": self.rows}


def list_tables(view: SourceView) -> list[TableRow]:
    """A postgres source's tables and the row counts recorded with its dump."""
    if not isinstance(view.meta, postgres.Meta):
        raise RestoreError(f"{view.where}: no record of its database in the private part")
    return [TableRow(t, n) for t, n in sorted(view.meta.row_counts.items())]


def split_table(table: str) -> tuple[str | None, str]:
    """Given "schema.table" or "table", return (schema or None, table), each checked
    with PostgreSQL's name rules (vkbackup.names). Raise UsageError otherwise."""
    schema, dot, name = table.partition(".")
    if not dot:
        schema, name = "", table
    for part in (schema, name) if dot else (name,):
        names.check_table(part, "--table", UsageError)
    return (schema if dot else None), name


def pg_restore_argv(table: str) -> list[str]:
    """The local pg_restore that turns a custom archive on stdin into one table's
    data as SQL on stdout."""
    schema, name = split_table(table)
    argv = ["pg_restore", "--data-only"]
    if schema is not None:
        argv.append(f"--schema={schema}")
    return [*argv, f"--table={name}", "-f", "-"]


_VERSION_RE = re.compile(rb"\b(\d+)(?:\.\d+)?")


def _install_hint(major: int | None) -> str:
    want = f" {major} or newer" if major else ""
    return (
        f"install postgresql-client{want} on this machine (Debian: apt-get install "
        f"postgresql-client{'-' + str(major) if major else ''}, from apt.postgresql.org for "
        "a newer major)"
    )


def check_pg_restore(local: Transport, major: int | None) -> int:
    """Return the local pg_restore's major version. Raise RestoreError naming the
    tool and what to install if it is missing or older than *major* (the dump's)."""
    try:
        res = local.run(["pg_restore", "--version"], check=False)
    except TransportError:
        raise RestoreError("pg_restore is not installed here", hint=_install_hint(major)) from None
    m = _VERSION_RE.search(res.stdout)
    if res.status != 0 or m is None:
        raise RestoreError(
            f"pg_restore --version failed (status {res.status}): {res.stderr.strip()[-200:]}",
            hint=_install_hint(major),
        )
    have = int(m.group(1))
    if major is not None and have < major:
        raise RestoreError(
            f"pg_restore here is version {have}, older than the dump's PostgreSQL {major}",
            hint=_install_hint(major),
        )
    return have


def restore_table(
    dump: Readable, table: str, local: Transport, write: Write, major: int | None = None
) -> None:
    """Given a pg_dump custom archive as a plaintext stream, write *table*'s data as
    SQL: the archive is streamed into a local `pg_restore` (pg_restore_argv), its
    stdout to *write*. Raise RestoreError if pg_restore is missing, too old, or
    fails (its stderr tail in the message)."""
    argv = pg_restore_argv(table)
    check_pg_restore(local, major)
    proc = local.start(argv)
    errors: list[BaseException] = []

    def pump() -> None:
        try:
            for chunk in iter_chunks(proc.stdout, CHUNK):
                write(chunk)
        except BaseException as e:
            errors.append(e)
            proc.kill()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        for chunk in iter_chunks(dump, CHUNK):
            try:
                proc.write(chunk)
            except (BrokenPipeError, OSError):
                break  # pg_restore stopped reading: its status says why
    except BaseException:
        proc.kill()
        with contextlib.suppress(TransportError):
            proc.wait(check=False)
        reader.join(timeout=10)
        raise
    status = proc.wait(check=False)
    reader.join()
    if errors:
        raise errors[0]
    if status != 0:
        tail = proc.stderr_tail().strip()
        hint = None
        if "unsupported version" in tail:
            hint = _install_hint(major)
        raise RestoreError(f"{shlex.join(argv)} failed (status {status}): {tail[-500:]}", hint=hint)


def resolve_table(view: SourceView, table: str) -> str:
    """Given --table ("schema.table" or "table"), return the "schema.table" of the
    snapshot it names, from the tables the snapshot counted (its row_counts).
    A bare name is looked up in every schema: pg_restore's --table alone would
    take the table of that name from each of them. Raise UsageError for a name
    PostgreSQL's rules refuse, a source that is not a database, a bare name
    several schemas have (naming them), or a bare name when the snapshot
    counted no tables; RestoreError for a table the snapshot does not have."""
    schema, name = split_table(table)
    if not isinstance(view.meta, postgres.Meta):
        raise UsageError(f"{view.where} is a {view.type} source, not a database: no --table")
    counted = view.meta.row_counts
    if schema is not None:
        if counted and table not in counted:
            raise _no_table(view, table)
        return table
    if not counted:
        raise UsageError(
            f"{view.where}: the snapshot recorded no tables to find {printable(table)!r} in: "
            "give it as 'schema.table'"
        )
    found = sorted(k for k in counted if k.partition(".")[2] == name)
    if not found:
        raise _no_table(view, table)
    if len(found) > 1:
        raise UsageError(
            f"{view.where}: several schemas have a table {printable(table)!r}: "
            f"{', '.join(printable(k) for k in found)}; give one as 'schema.table'"
        )
    return found[0]


def _no_table(view: SourceView, table: str) -> RestoreError:
    return RestoreError(
        f"{view.where}: no table {printable(table)!r} in this snapshot",
        hint=f"`vkbackup ls {view.manifest.id} {view.name}` lists its tables",
    )


def dump_table(
    storage: Storage,
    view: SourceView,
    identities: Sequence[Identity],
    table: str,
    local: Transport,
    write: Write,
) -> None:
    """Write *table*'s data as SQL, as the snapshot's dump has it (restore_table),
    the name resolved first (resolve_table)."""
    table = resolve_table(view, table)
    obj = next((o for o in view.objects if o.role == "pg-dump"), None)
    if obj is None:
        raise RestoreError(f"{view.where}: no pg_dump archive in this snapshot")
    assert isinstance(view.meta, postgres.Meta)  # resolve_table checked it
    with open_object(
        storage, obj, identities, decompress=True, expect=view.checks.get(obj.key)
    ) as stream:
        restore_table(stream, table, local, write, view.meta.major)
        for _ in iter_chunks(stream, CHUNK):  # pg_restore stopped early: verify the rest
            pass
