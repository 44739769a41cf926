"""`postgres` source: a consistent `pg_dump -Fc` of one database in a container,
its roles (`pg_dumpall --globals-only`), and per-table row counts taken from
the SAME MVCC snapshot as the dump (so a restore can compare them exactly).

How (all on the host, through `docker exec`, never a pty):
  1. a psql session opens a REPEATABLE READ transaction and exports its
     snapshot (`pg_export_snapshot()`), counts the rows of every table in
     it into a root-only temp file, and keeps the transaction open;
  2. `pg_dump -Fc -Z<level> --snapshot=<id>` streams the dump out;
  3. the transaction ends; `after_stream` reads and removes the counts file.

Recorded (private part): server version (and major), extensions, the
container's image, database size, row counts.

Reuse of an unchanged database: the dump is still a full pg_dump whenever
the database may have changed. Before dumping, `plan` reads the cluster's
transaction counter: the next transaction id (64-bit, with its epoch) and
whether any transaction holding an id is running, with the system
identifier, the current timeline, server and pg_dump versions, and a digest
of every sequence's last_value. Every change a dump can show (rows, schema,
roles, large objects) is made by a transaction that is given an id; the one
exception, `nextval` within a sequence's pre-logged values, moves that
sequence's last_value, which the digest covers. So when nothing was running
at the earlier read and all of that is the same, nothing the dump holds has
changed since, and the earlier dump (taken after that read) holds exactly
what a new one would. The state is read BEFORE the dump's snapshot is
taken, so a commit racing with the dump can only make the next comparison
fail (a fresh dump), never hide a change. The WAL position is no proof
here: reading pages prunes them and writes WAL without changing any row.
When the fingerprint matches an object of the previous complete snapshot,
the dump and globals are referenced, not taken again; the row counts are
re-counted (host-side only) and the state re-read after counting: if it
moved, the reuse is dropped and a fresh dump is taken. No fingerprint
(always dump) while a transaction holding an id runs (the usual case on a
busy server), on a standby, on a server older than PostgreSQL 10, or when
the state cannot be read (logged as a warning).
"""

from __future__ import annotations

import shlex
from typing import Any

from vkbackup.config.model import SourceConfig
from vkbackup.errors import SnapshotError
from vkbackup.logs import get_logger
from vkbackup.sources.base import PlanContext, SourcePlan, StreamPlan, fingerprint_tag
from vkbackup.transport.base import Transport, pipeline_argv

log = get_logger("postgres")

END_MARK = "__VKBACKUP_END__"

COUNTS_SQL = (
    "SELECT n.nspname || '.' || c.relname || E'\\t' || "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', "
    "n.nspname, c.relname), false, true, '')))[1]::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1;"
)

INFO_SQL = (
    "SELECT 'version_num', current_setting('server_version_num') "
    "UNION ALL SELECT 'version', current_setting('server_version') "
    "UNION ALL SELECT 'size', pg_database_size(current_database())::text "
    "UNION ALL SELECT 'encoding', pg_encoding_to_char(encoding) FROM pg_database "
    "WHERE datname = current_database() "
    "UNION ALL SELECT 'extension', extname || ' ' || extversion FROM pg_extension;"
)


STATE_SQL = (
    "SELECT txid_snapshot_xmin(s)::text || E'\\t' || txid_snapshot_xmax(s)::text || E'\\t' || "
    "(SELECT system_identifier FROM pg_control_system())::text || E'\\t' || "
    "substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) || E'\\t' || "
    "current_setting('server_version_num') || E'\\t' || pg_is_in_recovery()::text || E'\\t' || "
    "(SELECT md5(coalesce(string_agg(schemaname || '.' || sequencename || '=' || "
    "coalesce(last_value::text, '-'), ',' ORDER BY schemaname, sequencename), '')) "
    "FROM pg_sequences) "
    "FROM txid_current_snapshot() AS s;"
)


STATE_MARK = "__VKBACKUP_STATE__"


def probe_argv(container: str, user: str, database: str, first_sql: str) -> list[str]:
    """argv of one `docker exec` (each costs ~0.1 s): psql runs *first_sql* (the
    info or the row counts), prints STATE_MARK, runs STATE_SQL; then pg_dump's
    version. See split_probe."""
    psql = shlex.join(psql_command(user, database, first_sql, f"SELECT '{STATE_MARK}';", STATE_SQL))
    return ["docker", "exec", container, "sh", "-c", f"{psql} && pg_dump --version"]


def split_probe(status: int, stdout: str) -> tuple[str | None, str | None]:
    """Given probe_argv's exit status and output, return (first_sql's output or None
    if it failed, the state text for state_fingerprint or None if that part failed)."""
    before, mark, after = stdout.partition(STATE_MARK + "\n")
    if not mark:
        return None, None
    return before, (after if status == 0 else None)


def state_fingerprint(output: str, database: str, user: str, level: int) -> str | None:
    """Given state_argv's output, return the dump's content fingerprint, or None
    when the state proves nothing (a transaction holding an id is running, a
    standby, unreadable output)."""
    lines = [ln for ln in output.splitlines() if ln.strip()]
    if len(lines) != 2:
        return None
    fields = lines[0].split("\t")
    if len(fields) != 7 or not all(fields):
        return None
    xmin, xmax, sysid, timeline, version, recovery, sequences = fields
    if not (xmin.isdigit() and xmax.isdigit()) or xmin != xmax or recovery != "false":
        return None
    dump_version = lines[1].strip()
    return (
        f"pg:v3:{sysid}:{timeline}:{xmax}:{sequences}:{version}:{dump_version}:"
        f"{database}:{user}:{level}"
    )


def counts_file(snapshot_id: str, source: str) -> str:
    return f"/tmp/vkbackup-{snapshot_id}-{source}.counts"


def psql_command(user: str, database: str, *sqls: str) -> list[str]:
    """psql running each SQL text in turn (its own transaction, stopping at the first
    error), unaligned tab-separated output."""
    argv = ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
            "-U", user, "-d", database]  # fmt: skip
    for sql in sqls:
        argv += ["-c", sql]
    return argv


def psql_argv(container: str, user: str, database: str, sql: str) -> list[str]:
    """argv running one SQL text in the container, unaligned tab-separated output."""
    return ["docker", "exec", "-i", container, *psql_command(user, database, sql)]


def dump_script(container: str, user: str, database: str, level: int, counts_path: str) -> str:
    """Return the bash script that streams a consistent dump (see the module docstring)."""
    q = shlex.quote
    return f"""
umask 077
C={q(container)}; U={q(user)}; D={q(database)}; COUNTS={q(counts_path)}
coproc PSQL {{ docker exec -i "$C" psql -X -q -A -t -v ON_ERROR_STOP=1 -U "$U" -d "$D"; }}
IN=${{PSQL[1]}}; OUT=${{PSQL[0]}}
printf '%s\\n' 'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;' \
  'SELECT pg_export_snapshot();' >&$IN
IFS= read -r -t 120 SNAP <&$OUT || {{ echo "psql in $C did not export a snapshot" >&2; exit 1; }}
printf '%s\\n' {q(COUNTS_SQL)} "SELECT '{END_MARK}';" >&$IN
: > "$COUNTS"; line=
while IFS= read -r -t 3600 line <&$OUT; do
  [ "$line" = '{END_MARK}' ] && break
  printf '%s\\n' "$line" >> "$COUNTS"
done
[ "$line" = '{END_MARK}' ] || {{ echo "row counting in $C failed" >&2; exit 1; }}
docker exec "$C" pg_dump -U "$U" -d "$D" -Fc -Z {int(level)} --snapshot="$SNAP"
printf '%s\\n' 'COMMIT;' '\\q' >&$IN
wait
"""


def globals_argv(container: str, user: str) -> list[str]:
    return ["docker", "exec", container, "pg_dumpall", "-U", user, "--globals-only"]


def parse_counts(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        table, _, count = line.rpartition("\t")
        out[table] = int(count)
    return out


class PostgresSource:
    type = "postgres"

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        assert cfg.container and cfg.database
        self.container: str = cfg.container
        self.database: str = cfg.database

    def probe(self, t: Transport) -> tuple[dict[str, Any], str | None]:
        """(server info, the cluster-state fingerprint or None when unprovable)."""
        res = t.run(probe_argv(self.container, self.cfg.user, self.database, INFO_SQL), check=False)
        text, state = split_probe(res.status, res.stdout.decode(errors="replace"))
        if text is None:
            raise SnapshotError(
                f"{t.name}: postgres source {self.cfg.name!r} ({self.cfg.where}): cannot query "
                f"database {self.database!r} in container {self.container!r}: "
                f"{res.stderr.strip()[-400:]}"
            )
        info: dict[str, Any] = {"extensions": []}
        for line in text.splitlines():
            key, _, value = line.partition("\t")
            if key == "extension":
                info["extensions"].append(value)
            elif key:
                info[key] = value
        num = int(info.get("version_num", "0"))
        info["major"] = num // 10000 if num >= 100000 else num // 100
        image = t.run(["docker", "inspect", "-f", "{{.Config.Image}}", self.container], check=False)
        info["image"] = image.stdout.decode().strip()
        return info, self._fingerprint(t, state, res.stderr)

    def _fingerprint(self, t: Transport, state: str | None, stderr: str) -> str | None:
        if state is None:
            log.warning(
                "%s: postgres source %s: cannot read the database state, so an unchanged "
                "database is dumped again each time: %s",
                t.name,
                self.cfg.name,
                stderr.strip()[-200:],
            )
            return None
        return state_fingerprint(state, self.database, self.cfg.user, self.cfg.compress_level)

    def unchanged_counts(self, t: Transport, fp: str) -> dict[str, int] | None:
        """Row counts of the unchanged database, or None if the state moved meanwhile
        (the state is read again after counting, in the same command)."""
        res = t.run(
            probe_argv(self.container, self.cfg.user, self.database, COUNTS_SQL), check=False
        )
        text, state = split_probe(res.status, res.stdout.decode(errors="replace"))
        if text is None:
            return None
        counts = parse_counts(text)
        return counts if self._fingerprint(t, state, res.stderr) == fp else None

    def plan(self, t: Transport, ctx: PlanContext) -> SourcePlan:
        info, fp = self.probe(t)
        size = int(info.get("size", "0") or 0)
        meta: dict[str, Any] = {
            "container": self.container,
            "database": self.database,
            "user": self.cfg.user,
            "server": info,
        }
        previous = {o.fingerprint: o for o in ctx.previous if o.role == "pg-dump"}
        earlier = previous.get(fingerprint_tag(fp)) if fp is not None else None
        if fp is not None and earlier is not None:
            counts = self.unchanged_counts(t, fp)
            if counts is None:
                log.info(
                    "%s: database %s changed while counting: a full dump is taken",
                    t.name,
                    self.database,
                )
                fp = None
            else:
                meta["row_counts"] = counts
                meta["unchanged_since"] = earlier.uploaded_in
        if fp is not None and earlier is not None:
            # referenced by the snapshot (same fingerprint): never run
            dump = StreamPlan(name="dump.pgdump", role="pg-dump", argv=[], fingerprint=fp)
        else:
            path = counts_file(ctx.snapshot_id, self.cfg.name)
            script = dump_script(
                self.container, self.cfg.user, self.database, self.cfg.compress_level, path
            )
            dump = StreamPlan(
                name="dump.pgdump",
                role="pg-dump",
                argv=pipeline_argv(script),
                compression="none",  # pg_dump -Fc compresses itself
                size_hint=size or None,
                fingerprint=fp,
                meta={"counts_file": path},
            )
        streams = [dump]
        if self.cfg.globals:
            streams.append(
                StreamPlan(
                    name="globals.sql",
                    role="pg-globals",
                    argv=globals_argv(self.container, self.cfg.user),
                    fingerprint=("globals:" + fp) if fp else None,
                )
            )
        return SourcePlan(streams=streams, meta=meta)

    def after_stream(
        self, t: Transport, stream: StreamPlan, plan: SourcePlan, stderr_tail: str
    ) -> None:
        if stream.role != "pg-dump":
            return
        path = stream.meta.pop("counts_file")
        res = t.run(pipeline_argv(f"cat {shlex.quote(path)}; rm -f {shlex.quote(path)}"))
        plan.meta["row_counts"] = parse_counts(res.stdout.decode())


def wait_ready_script(container: str, user: str, seconds: int) -> str:
    """Bash that waits until the server in *container* accepts queries (stable for 2 s)."""
    q = shlex.quote
    return f"""
ok=0
for i in $(seq 1 {int(seconds)}); do
  if docker exec {q(container)} psql -X -q -U {q(user)} -d postgres -c 'select 1' \
       >/dev/null 2>&1; then
    ok=$((ok+1)); [ $ok -ge 3 ] && exit 0
  else ok=0; fi
  sleep 1
done
echo "PostgreSQL in {container} did not become ready in {int(seconds)}s" >&2
docker logs --tail 20 {q(container)} >&2 2>&1 || true
exit 1
"""


def prepare_globals(sql: bytes, superuser: str) -> bytes:
    """Make `pg_dumpall --globals-only` output safe to replay on a server that already
    has some roles: every `CREATE ROLE x;` becomes create-if-missing (the
    following ALTER ROLE sets its attributes and password either way)."""
    import re

    out: list[bytes] = []
    pat = re.compile(rb"^CREATE ROLE (\"?[^;\"]+\"?);\s*$")
    for line in sql.splitlines(keepends=True):
        m = pat.match(line)
        if m:
            role = m.group(1)
            out.append(
                b"DO $vk$BEGIN CREATE ROLE " + role + b"; "
                b"EXCEPTION WHEN duplicate_object THEN NULL; END$vk$;\n"
            )
        else:
            out.append(line)
    return b"".join(out)


def restore_globals_argv(container: str, user: str) -> list[str]:
    return [
        "docker", "exec", "-i", container,
        "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", "postgres", "-f", "-",
    ]  # fmt: skip


def restore_dump_script(container: str, user: str, database: str, major: int) -> str:
    """Bash that drops *database* if present and restores the custom-format dump on
    stdin with `pg_restore -C` (the database is created as recorded)."""
    q = shlex.quote
    force = " --force" if major >= 13 else ""
    return f"""
docker exec {q(container)} dropdb -U {q(user)} --if-exists{force} {q(database)}
docker exec -i {q(container)} pg_restore -U {q(user)} -d postgres -C --exit-on-error
"""


def server_major_argv(container: str, user: str) -> list[str]:
    return psql_argv(container, user, "postgres", "SHOW server_version_num;")
