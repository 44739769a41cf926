"""`postgres` source: everything vkbackup does with PostgreSQL, from dump to restore
to deep verify.

Snapshot: a consistent `pg_dump -Fc` of one database in a container, its
roles (`pg_dumpall --globals-only`), and per-table row counts taken from the
SAME MVCC snapshot as the dump (so a restore can compare them exactly).
Restore and `verify --deep`: see the restore section below.

How (all on the host, through `docker exec`, never a pty):
  1. a psql session opens a REPEATABLE READ transaction and exports its
     snapshot (`pg_export_snapshot()`), counts the rows of every table in
     it into a root-only temp file, and keeps the transaction open;
  2. `pg_dump -Fc -Z<level> --snapshot=<id>` streams the dump out;
  3. the transaction ends; `after_stream` reads and removes the counts file.

Recorded (private part): server version (and major), extensions, the
container's image, database size, row counts.

Deep verify's image (`deep_image`): the throwaway server is started from an
image, and the one recorded is only a string in the private part, which
anyone holding the recipient (a public key) can forge: it could name any
image in any registry. So `verify --deep` starts the recorded image only if
it is an official PostgreSQL image of the recorded server major:
`postgres:<major>[.<minor>][-<variant>][@sha256:<digest>]`, optionally as
`library/postgres` or `docker.io/library/postgres` (`postgres:15`,
`postgres:15.6-alpine`, `postgres:16-bookworm`), <major> equal to the
recorded `server.major`. Anything else (pgvector/pgvector:pg16 included) is
refused with an IntegrityError naming the manifest field
(`sources.<name>.meta.server.image`), and the operator names the image
instead (`verify --deep --deep-image IMAGE`: it must be a Docker reference,
and the server's major is still checked before the restore). Either way the
image reaches `docker run` as one argv element, never through a shell.

Reuse of an unchanged database: the dump is still a full pg_dump whenever
the database may have changed. Before dumping, `plan` reads the cluster's
transaction horizon (`txid_current_snapshot()`): xmax, one past the latest
completed transaction id (64-bit, with its epoch), and whether any
transaction below it still runs, with the system identifier, the current
timeline, server and pg_dump versions, and a digest of every sequence's
last_value. Every change a dump can show (rows, schema, roles, large
objects) is made by a transaction that is given an id; the one exception,
`nextval` within a sequence's pre-logged values, moves that sequence's
last_value, which the digest covers. A transaction that completes moves
xmax. So when nothing below xmax was running at the earlier read and all of
that is the same now, no transaction has committed since, and the earlier
dump (taken after that read) holds exactly what a new one would. A
transaction still open at both reads with an id at or above xmax is not seen
by either read, nor by either dump: its commit moves xmax (a fresh dump).
The state is read BEFORE the dump's snapshot is taken, so a commit racing
with the dump can only make the next comparison fail (a fresh dump), never
hide a change. The WAL position is no proof here: reading pages prunes them
and writes WAL without changing any row. When the fingerprint matches an
object of the previous complete snapshot, the dump and globals are
referenced, not taken again; the row counts are re-counted (host-side only)
and the state re-read after counting: if it moved, the reuse is dropped and
a fresh dump is taken. No fingerprint (always dump) while a transaction
older than the latest completed one runs (the usual case on a busy server),
on a standby, on a server older than PostgreSQL 10, or when the state cannot
be read (logged as a warning).

Base backups (`pitr = true`, point-in-time recovery: `vkbackup.pitr`): the
snapshot also streams `pg_basebackup -D - -Ft -X fetch` from the container,
a tar of the whole cluster with the WAL it needs to be consistent, when the
newest one the source's previous snapshot references is older than
[pitr] base_every_days; otherwise it references that one again (so prune
keeps it while a kept snapshot needs it). Its facts, which a restore needs
to choose and check it (pg_basebackup's WAL start and end points and
timeline, from its -v lines, then prod's clock, system identifier and data
directory once it ended: `parse_base_facts`), are a small object of their
own, `base.facts`, written by `base_script` to a root-only file on the host
and streamed after the tar: referenced with the base backup by every snapshot
that reuses it, they outlive the snapshot that took it (prune may delete its
manifest). `after_stream` also records them as the source's `base` in that
snapshot's private part. A restore to a time starts from the newest base
backup that ended before it, of any snapshot, and replays the streamed WAL
(`vkbackup.pitr.recover`).
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from vkbackup.config.model import SourceConfig
from vkbackup.crypto import Identity
from vkbackup.errors import IntegrityError, RestoreError, SnapshotError, UsageError, VkError
from vkbackup.layout import snapshot_time
from vkbackup.logs import get_logger, register_secret
from vkbackup.manifest import ObjectRecord
from vkbackup.restore.objects import open_object, read_object
from vkbackup.restore.steps import DatabaseParams, Step, StepContext
from vkbackup.restore.target import service_container_argv
from vkbackup.sources.base import (
    SUFFIX,
    PlanContext,
    SourcePlan,
    StreamPlan,
    compress_stage,
    fingerprint_tag,
)
from vkbackup.storage.base import Storage
from vkbackup.textsafe import printable
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
    """Given the state part of probe_argv's output (split_probe), return the dump's
    content fingerprint, or None when the state proves nothing (a transaction
    below xmax still runs, a standby, unreadable output)."""
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
docker exec "$C" pg_dump -U "$U" -d "$D" -Fc -Z {int(level)} --snapshot="$SNAP" || {{
  s=$?; why="exit status $s"; [ $s -gt 128 ] && why="killed by signal $((s - 128))"
  rm -f "$COUNTS"
  echo "pg_dump of database $D in container $C failed ($why): the dump is incomplete" >&2
  exit $s
}}
printf '%s\\n' 'COMMIT;' '\\q' >&$IN
wait
"""


BASE_MARK = "vkbackup-base-end"
BASE_END_SQL = (
    "SELECT 'vkbackup-base-end' || E'\\t' || to_char(now() AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') || E'\\t' || system_identifier::text || E'\\t' || "
    "current_setting('data_directory') || E'\\t' || current_setting('server_version_num') "
    "FROM pg_control_system();"
)
_BASE_START_RE = re.compile(
    r"write-ahead log start point: ([0-9A-F]{1,8}/[0-9A-F]{1,8}) on timeline ([0-9]{1,10})"
)
_BASE_END_RE = re.compile(r"write-ahead log end point: ([0-9A-F]{1,8}/[0-9A-F]{1,8})")


def base_facts_file(snapshot_id: str, source: str) -> str:
    return f"/tmp/vkbackup-{snapshot_id}-{source}.base"


def base_script(container: str, user: str, compressor: str, facts_path: str) -> str:
    """Bash streaming a base backup (a tar of the cluster, with the WAL it needs;
    compressed by *compressor*) to stdout. Its facts (pg_basebackup's -v lines,
    then prod's clock and cluster facts: `parse_base_facts`) go to *facts_path*
    (root only; `facts_argv` streams and removes it) and to stderr."""
    q = shlex.quote
    psql = shlex.join(psql_command(user, "postgres", BASE_END_SQL))
    base = shlex.join(
        ["pg_basebackup", "-U", user, "-D", "-", "-Ft", "-X", "fetch", "--checkpoint=fast",
         "--no-manifest", "-v"]
    )  # fmt: skip
    return f"""
umask 077; set -o noclobber  # the facts file is new, never one found there
C={q(container)}; F={q(facts_path)}
docker exec "$C" {base} 2>"$F"{compress_stage(compressor)} || {{
  s=$?; cat "$F" >&2; rm -f "$F"
  echo "pg_basebackup in container $C failed (exit status $s)" >&2; exit $s; }}
docker exec "$C" {psql} >> "$F" || {{ s=$?; rm -f "$F"; exit $s; }}
cat "$F" >&2
"""


def facts_argv(facts_path: str) -> list[str]:
    """argv streaming the base backup's facts file, then removing it."""
    q = shlex.quote(facts_path)
    return pipeline_argv(f"cat {q}; rm -f {q}")


def parse_base_facts(stderr: str, where: str) -> dict[str, Any]:
    """Given the stderr of base_script, return the base backup's record: start and
    end LSN, timeline, end time (prod's clock, UTC), system identifier, data
    directory and server version. Raise SnapshotError when a fact is missing."""
    start = _BASE_START_RE.search(stderr)
    end = _BASE_END_RE.search(stderr)
    facts = [ln.split("\t") for ln in stderr.splitlines() if ln.startswith(BASE_MARK + "\t")]
    if start is None or end is None or not facts or len(facts[-1]) != 5:
        raise SnapshotError(
            f"{where}: the base backup ended without its WAL start and end points or "
            f"prod's facts; pg_basebackup said: {stderr.strip()[-400:]}"
        )
    _, when, sysid, data_directory, version = facts[-1]
    try:
        datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        raise SnapshotError(f"{where}: unexpected time after the base backup: {when!r}") from None
    digits = re.compile(r"[0-9]{1,20}")
    if not (digits.fullmatch(sysid) and digits.fullmatch(version)) or not data_directory.startswith(
        "/"
    ):
        raise SnapshotError(f"{where}: unexpected facts after the base backup: {facts[-1]}")
    return {
        "start_lsn": start.group(1),
        "timeline": int(start.group(2)),
        "end_lsn": end.group(1),
        "end_time": when,
        "system_identifier": sysid,
        "data_directory": data_directory,
        "major": server_major(int(version)),
    }


def base_due(
    previous: Sequence[ObjectRecord], now: datetime, every_days: int
) -> ObjectRecord | None:
    """The base backup object a snapshot at *now* references again (the previous
    snapshot's, uploaded less than *every_days* ago), or None: take a new one."""
    for o in previous:
        if o.role != "pg-base" or not o.uploaded_in:
            continue
        try:
            taken = snapshot_time(o.uploaded_in)
        except ValueError:
            continue
        if now - taken < timedelta(days=every_days):
            return o
    return None


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
        info["major"] = server_major(int(info.get("version_num", "0") or 0))
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
        if self.cfg.pitr:
            streams += self.base_plan(ctx)
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

    def base_plan(self, ctx: PlanContext) -> list[StreamPlan]:
        """The base backup and its facts (a small object of its own, so that every
        snapshot referencing the base backup holds them too, whichever snapshot
        took it: prune may delete that one): the previous pair referenced while it
        is recent (the fingerprints name the snapshot that took them), else new."""
        now = ctx.now or snapshot_time(ctx.snapshot_id)
        earlier = base_due(ctx.previous, now, ctx.base_every_days)
        facts = next(
            (
                o
                for o in ctx.previous
                if earlier is not None
                and o.role == "pg-base-facts"
                and o.uploaded_in == earlier.uploaded_in
            ),
            None,
        )
        if earlier is not None and facts is not None:
            return [
                StreamPlan(
                    name=earlier.name.removesuffix(".age"),
                    role="pg-base",
                    argv=[],
                    fingerprint=f"pgbase:{earlier.uploaded_in}",
                ),
                StreamPlan(
                    name=facts.name.removesuffix(".age"),
                    role="pg-base-facts",
                    argv=[],
                    fingerprint=f"pgbasefacts:{earlier.uploaded_in}",
                ),
            ]
        path = base_facts_file(ctx.snapshot_id, self.cfg.name)
        return [
            StreamPlan(
                name="base.tar" + SUFFIX[ctx.compressor],
                role="pg-base",
                argv=pipeline_argv(
                    base_script(self.container, self.cfg.user, ctx.compressor, path)
                ),
                compression=ctx.compressor,
                fingerprint=f"pgbase:{ctx.snapshot_id}",
            ),
            StreamPlan(
                name="base.facts",
                role="pg-base-facts",
                argv=facts_argv(path),
                fingerprint=f"pgbasefacts:{ctx.snapshot_id}",
            ),
        ]

    def after_stream(
        self, t: Transport, stream: StreamPlan, plan: SourcePlan, stderr_tail: str
    ) -> None:
        if stream.role == "pg-base":
            where = f"{t.name}: postgres source {self.cfg.name} ({self.cfg.where})"
            plan.meta["base"] = parse_base_facts(stderr_tail, where)
            return
        if stream.role != "pg-dump":
            return
        path = stream.meta.pop("counts_file")
        res = t.run(pipeline_argv(f"cat {shlex.quote(path)}; rm -f {shlex.quote(path)}"))
        plan.meta["row_counts"] = parse_counts(res.stdout.decode())


# -- restore --------------------------------------------------------------------
#
# The same restore serves `vkbackup restore` (into the container the snapshot's
# compose project starts on the target) and `verify --deep` (into a throwaway
# container from the recorded image): wait until the server answers, refuse a
# different major version, replay the roles, `pg_restore -C` the dump, then
# compare every table's row count with the counts taken in the dump's own MVCC
# snapshot. Equal counts are the proof the dump restored whole.


def server_major(version_num: int) -> int:
    """Given server_version_num (150014, 90624), return the major version (15, and
    906 for 9.6: before 10 the major had two parts)."""
    return version_num // 10000 if version_num >= 100000 else version_num // 100


@dataclass(frozen=True)
class BaseFacts:
    """What a snapshot recorded of the base backup it took (`parse_base_facts`)."""

    start_lsn: int
    end_lsn: int
    timeline: int
    end_time: datetime  # prod's clock, UTC: every commit before it is in the backup
    system_identifier: str
    data_directory: str
    major: int

    @classmethod
    def decode(cls, doc: object, where: str) -> BaseFacts:
        from vkbackup.pitr.wal import MAX_TIMELINE, parse_lsn

        if not isinstance(doc, dict):
            raise IntegrityError(f"{where}.base: must be an object")
        try:
            end_time = datetime.fromisoformat(str(doc["end_time"]).replace("Z", "+00:00"))
            facts = cls(
                start_lsn=parse_lsn(str(doc["start_lsn"])),
                end_lsn=parse_lsn(str(doc["end_lsn"])),
                timeline=int(doc["timeline"]),
                end_time=end_time,
                system_identifier=str(doc["system_identifier"]),
                data_directory=str(doc["data_directory"]),
                major=int(doc["major"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise IntegrityError(f"{where}.base: {type(e).__name__}: {e}") from None
        path = facts.data_directory
        if (
            end_time.tzinfo is None
            or not 1 <= facts.timeline <= MAX_TIMELINE
            or not re.fullmatch(r"[0-9]{1,20}", facts.system_identifier)
            or not path.startswith("/")
            or "/../" in path + "/"
            or any(ord(c) < 32 for c in path)
        ):
            raise IntegrityError(f"{where}.base: a value is out of range: {doc}")
        return facts


@dataclass(frozen=True)
class Meta:
    """What a snapshot recorded of a postgres source (private part)."""

    container: str
    database: str
    user: str
    major: int | None
    image: str
    row_counts: dict[str, int]
    base: BaseFacts | None = None  # the base backup this snapshot took (pitr = true)

    @classmethod
    def decode(cls, doc: dict[str, Any], where: str) -> Meta:
        server = doc.get("server") or {}
        counts = doc.get("row_counts") or {}
        if not isinstance(server, dict) or not isinstance(counts, dict):
            raise IntegrityError(f"{where}: server and row_counts must be objects")
        container, database = doc.get("container"), doc.get("database")
        if not isinstance(container, str) or not isinstance(database, str):
            raise IntegrityError(f"{where}: container and database must be strings")
        try:
            major = int(server["major"]) if server.get("major") else None
            row_counts = {str(k): int(v) for k, v in counts.items()}
        except (TypeError, ValueError):
            raise IntegrityError(f"{where}: server.major and row_counts must be numbers") from None
        return cls(
            container=container,
            database=database,
            user=str(doc.get("user") or "postgres"),
            major=major,
            image=str(server.get("image") or ""),
            row_counts=row_counts,
            base=BaseFacts.decode(doc["base"], where) if doc.get("base") is not None else None,
        )


def restore_steps(name: str, meta: Meta, objects: list[ObjectRecord]) -> list[Step]:
    """The restore steps of a postgres source: one database step. (Starting its
    container first is the plan's business: it knows the compose projects.)"""
    params = DatabaseParams(
        container=meta.container,
        database=meta.database,
        user=meta.user,
        major=meta.major,
        row_counts=tuple(sorted(meta.row_counts.items())),
    )
    title = f"restore database {meta.database} (PostgreSQL {meta.major})"
    return [Step(f"database:{name}", title, params, name, list(objects))]


def wait_ready_script(container: str, user: str, seconds: int) -> str:
    """Bash that waits until the server in *container* accepts queries (stable for 2 s)."""
    q = shlex.quote
    return f"""
C={q(container)}
ok=0
for i in $(seq 1 {int(seconds)}); do
  if docker exec "$C" psql -X -q -U {q(user)} -d postgres -c 'select 1' >/dev/null 2>&1; then
    ok=$((ok+1)); [ $ok -ge 3 ] && exit 0
  else ok=0; fi
  sleep 1
done
printf 'PostgreSQL in %s did not become ready in %ss\n' "$C" {int(seconds)} >&2
docker logs --tail 20 "$C" >&2 2>&1 || true
exit 1
"""


def prepare_globals(sql: bytes, superuser: str) -> bytes:
    """Make `pg_dumpall --globals-only` output safe to replay on a server that already
    has some roles: every `CREATE ROLE x;` becomes create-if-missing (the
    following ALTER ROLE sets its attributes and password either way)."""
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


def count_differences(want: dict[str, int], got: dict[str, int]) -> list[str]:
    """Given recorded and restored row counts, return one phrase per table that differs."""
    return sorted(
        f"{k}: recorded {want.get(k)}, restored {got.get(k)}"
        for k in set(want) | set(got)
        if want.get(k) != got.get(k)
    )


def restore_into(
    t: Transport,
    container: str,
    meta: Meta,
    *,
    globals_sql: bytes | None,
    feed_dump: Callable[[list[str]], None],
) -> dict[str, int]:
    """Restore one database into the server running in *container* on *t*: wait for
    it, check its major version against the dump's, replay *globals_sql* (roles),
    hand *feed_dump* the argv that takes the dump on stdin, and return the restored
    row counts. Raise RestoreError (wrong major, a failed command)."""
    t.run(pipeline_argv(wait_ready_script(container, meta.user, 120)))
    out = t.run(server_major_argv(container, meta.user)).stdout.decode().strip()
    major = server_major(int(out))
    if meta.major and meta.major != major:
        raise RestoreError(
            f"{t.name}: container {container} runs PostgreSQL {major}, the dump of "
            f"{meta.database} is from PostgreSQL {meta.major}",
            hint="restore into the same major version: use the image recorded in the snapshot",
        )
    if globals_sql is not None:
        t.run(
            restore_globals_argv(container, meta.user),
            input=prepare_globals(globals_sql, meta.user),
        )
    feed_dump(pipeline_argv(restore_dump_script(container, meta.user, meta.database, major)))
    res = t.run(psql_argv(container, meta.user, meta.database, COUNTS_SQL))
    return parse_counts(res.stdout.decode())


def _objects(
    objects: list[ObjectRecord], database: str
) -> tuple[ObjectRecord, ObjectRecord | None]:
    by_role = {o.role: o for o in objects}
    dump = by_role.get("pg-dump")
    if dump is None:
        raise RestoreError(f"database {database}: the snapshot has no dump object")
    return dump, by_role.get("pg-globals")


def find_container(t: Transport, p: DatabaseParams, stopped: bool = False) -> str:
    """The database's container on the target, found by its compose project and service
    (the name prod gave it is only checked): raise RestoreError when none runs (with
    *stopped*: none exists), or when its name differs from prod's."""
    if not (p.project and p.service):
        return p.container
    res = t.run(service_container_argv(p.project, p.service, stopped))
    names = res.stdout.decode().split()
    if not names:
        raise RestoreError(
            f"{t.name}: no {'' if stopped else 'running '}container for service {p.service} "
            f"of compose project "
            f"{p.project} (the database {p.database} ran in {p.container} on prod)"
        )
    if p.container not in names:
        raise RestoreError(
            f"{t.name}: service {p.service} of {p.project} runs as {', '.join(names)}, "
            f"not {p.container} as on prod"
        )
    return p.container


def restore_database(ctx: StepContext, step: Step) -> str:
    """The database step: restore into the container the plan started, then compare
    row counts with the snapshot's."""
    p = step.params
    assert isinstance(p, DatabaseParams)
    meta = Meta(p.container, p.database, p.user, p.major, "", dict(p.row_counts))
    container = find_container(ctx.t, p)
    dump, roles = _objects(step.objects, p.database)
    globals_sql = ctx.read(roles) if roles is not None else None
    got = restore_into(
        ctx.t,
        container,
        meta,
        globals_sql=globals_sql,
        feed_dump=lambda argv: ctx.feed(dump, lambda _compression: argv),  # -Fc: stored as is
    )
    if roles is not None:
        ctx.verified.append(f"{roles.key}: roles restored")
    diff = count_differences(meta.row_counts, got)
    if diff:
        raise RestoreError(
            f"database {p.database} restored but row counts differ from the snapshot: "
            + "; ".join(diff[:10])
        )
    ctx.verified.append(
        f"database {p.database}: row counts of {len(meta.row_counts)} tables equal the snapshot's"
    )
    return f"{len(meta.row_counts)} tables, {sum(meta.row_counts.values())} rows verified"


#: a Docker image reference (distribution's grammar): [domain[:port]/]path[:tag][@digest]
_REF_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REF_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_REF_DOMAIN = rf"{_REF_LABEL}(?:\.{_REF_LABEL})*"
DOCKER_REF_RE = re.compile(
    rf"(?:{_REF_DOMAIN}(?::[0-9]{{1,5}})?/)?{_REF_PART}(?:/{_REF_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
#: the official PostgreSQL images, one major each (see the module docstring)
OFFICIAL_IMAGE_RE = re.compile(
    r"(?:(?:docker\.io/)?library/)?postgres:(?P<major>[1-9][0-9]?)(?:\.[0-9]{1,3})?"
    r"(?:-[a-z0-9]+(?:[._-][a-z0-9]+)*)?(?:@sha256:[0-9a-f]{64})?"
)


def is_image_ref(ref: str) -> bool:
    """Whether *ref* is a Docker image reference (which never starts with "-")."""
    return len(ref) <= 255 and DOCKER_REF_RE.fullmatch(ref) is not None


def deep_image(meta: Meta, where: str, chosen: str | None = None) -> str:
    """Given a postgres source's record, where its image is in the manifest (for
    messages) and the image the operator chose (`--deep-image`, or None), return
    the image `verify --deep` may start. Raise UsageError for a chosen image that
    is no Docker reference, IntegrityError for a recorded one that is not an
    official PostgreSQL image of the recorded major (see the module docstring)."""
    if chosen is not None:
        if not is_image_ref(chosen):
            raise UsageError(f"--deep-image {printable(chosen)!r}: not a Docker image reference")
        return chosen
    image = meta.image
    hint = (
        "a forged private part can name any image; if this database runs another image "
        "(pgvector, postgis...), name it yourself: verify --deep --deep-image IMAGE"
    )
    m = OFFICIAL_IMAGE_RE.fullmatch(image)
    if m is None or not is_image_ref(image):
        raise IntegrityError(
            f"{where}: {printable(image)!r} is not an official PostgreSQL image "
            "(postgres:<major>[-variant]); refusing to start it for a deep verify",
            hint=hint,
        )
    if meta.major is None or int(m["major"]) != meta.major:
        raise IntegrityError(
            f"{where}: {image!r} is not PostgreSQL {meta.major}, the server major the "
            "snapshot recorded; refusing to start it for a deep verify",
            hint=hint,
        )
    return image


def deep_check(
    t: Transport,
    storage: Storage,
    identities: Sequence[Identity],
    meta: Meta,
    objects: list[ObjectRecord],
    *,
    where: str = "server.image",
    image: str | None = None,
) -> list[str]:
    """`verify --deep`: restore the dump into a throwaway server on *t* and compare row
    counts. Return the problems found (empty: the dump restores whole). Raise
    IntegrityError, before anything runs on *t*, if the recorded image may not be
    started (`deep_image`; *where* names its manifest field, *image* is the
    operator's choice).

    The throwaway server is a new container from that image, with no network, a
    random password and an anonymous data volume; it is removed afterwards
    whatever happens. Nothing is written to the host's existing containers or
    volumes."""
    try:
        dump, roles = _objects(objects, meta.database)
    except RestoreError as e:
        return [str(e)]
    if not meta.image and image is None:
        return [f"{dump.key}: no server image recorded"]
    server_image = deep_image(meta, where, image)
    name = f"vkbackup-verify-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    register_secret(password)
    try:
        env = ["-e", f"POSTGRES_PASSWORD={password}", "-e", f"POSTGRES_USER={meta.user}"]
        t.run(["docker", "run", "-d", "--name", name, "--network", "none", *env, server_image])

        def feed(argv: list[str]) -> None:
            with open_object(storage, dump, identities) as stream:
                t.feed(argv, stream)

        globals_sql = read_object(storage, roles, identities) if roles is not None else None
        got = restore_into(t, name, meta, globals_sql=globals_sql, feed_dump=feed)
        diff = count_differences(meta.row_counts, got)
        if diff:
            return [
                f"{dump.key}: restored into a throwaway server, row counts differ: "
                + "; ".join(diff[:10])
            ]
        log.info(
            "deep: %s restored on %s, %d tables, %d rows match",
            dump.key, t.name, len(meta.row_counts), sum(meta.row_counts.values()),
        )  # fmt: skip
        return []
    except VkError as e:
        return [f"{dump.key}: deep restore failed: {e}"]
    finally:
        t.run(["docker", "rm", "-f", "-v", name], check=False)
