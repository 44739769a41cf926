"""Restore a PostgreSQL server to a point in time: `restore --to-time` / `--to-lsn`.

Why this shape:

- **The rest of the restore is unchanged.** The plan is derived from a
  snapshot as always (by default the newest one taken at or before the
  target); only the PITR source's database step is swapped (`apply`) for one
  that recovers the server instead of loading the dump. Its id, place in the
  plan and what it waits for stay: the database's container has started (on
  an empty volume), and the apps start once it is done.
- **The newest base backup that ended before the target**, of any complete
  snapshot of the host (`find_bases`, `choose_base`): a base backup holds
  every commit made before it ended (prod's clock), and recovery cannot stop
  before it is consistent. Then the WAL chain from its start
  (`vkbackup.pitr.wal.chain_from`): only records whose signature checked are
  trusted, and the target must lie inside what the chain reaches, else the
  restore is refused naming how far it goes (or the gap that stops it).
- **PostgreSQL does the recovery.** On the target (`recover_script`), the
  container is stopped, its data directory emptied and the base tar
  extracted there (through the tar guard, like a volume); the WAL goes into
  `<data>/vkbackup_wal/`, a tar this machine builds from the verified
  segments (a partial one zero-padded back to a whole segment, as
  pg_receivewal's own .partial files are); `restore_command` copies from
  there, the recovery target and `recovery_target_action = 'promote'` go in
  postgresql.auto.conf, and `recovery.signal` starts archive recovery. The
  container starts, the step waits for the promotion (PostgreSQL itself
  refuses a target its WAL does not reach: "recovery ended before configured
  recovery target was reached"), then resets those settings with ALTER
  SYSTEM, removes the staged WAL, and reports the last transaction replayed
  from the server's log. Nothing of prod's configuration is changed.
- **Everything read from storage is data.** The data directory comes from the
  signed private part and is checked to be an absolute path; it reaches the
  target as a positional argument, never as shell text. Times and LSNs are
  re-formatted from parsed values before they reach a config file.
"""

from __future__ import annotations

import re
import shlex
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from vkbackup import catalog
from vkbackup.crypto import Identity
from vkbackup.errors import (
    CryptoError,
    IntegrityError,
    ObjectNotFoundError,
    RestoreError,
    SnapshotError,
    UsageError,
    VkError,
)
from vkbackup.layout import snapshot_time
from vkbackup.logs import get_logger
from vkbackup.manifest import Manifest, ObjectRecord
from vkbackup.pitr import wal
from vkbackup.restore.objects import TarCheck, open_object, read_object
from vkbackup.restore.plan import Plan
from vkbackup.restore.records import read_private
from vkbackup.restore.steps import DatabaseParams, PitrParams, Step, StepContext
from vkbackup.sources import postgres
from vkbackup.sources.base import DECOMPRESSORS
from vkbackup.storage.base import Storage
from vkbackup.streams import CHUNK
from vkbackup.transport.base import pipeline_argv

log = get_logger("pitr")

STAGE_DIR = "vkbackup_wal"
RECOVERY_SETTINGS = (
    "restore_command",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_action",
)


# -- what to recover to ------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A point in time (*time*), a WAL position (*lsn*), or neither: all the WAL there is."""

    time: datetime | None = None
    lsn: int | None = None

    @property
    def latest(self) -> bool:
        return self.time is None and self.lsn is None

    def describe(self) -> str:
        if self.time is not None:
            return self.time.isoformat()
        if self.lsn is not None:
            return f"LSN {wal.format_lsn(self.lsn)}"
        return "the newest WAL stored"


def parse_target(to_time: str | None, to_lsn: str | None) -> Target | None:
    """Given --to-time and --to-lsn, return the target (None: neither given). A time
    needs a UTC offset ("2026-12-01 17:59:30+00", "...Z"): a time without one would
    be read in this machine's zone, which may not be prod's. Raise UsageError."""
    if to_time is not None and to_lsn is not None:
        raise UsageError("--to-time and --to-lsn: give one of them")
    if to_lsn is not None:
        try:
            return Target(lsn=wal.parse_lsn(to_lsn))
        except ValueError:
            raise UsageError(
                f"--to-lsn {to_lsn!r}: not a WAL position such as 16/B374D848"
            ) from None
    if to_time is None:
        return None
    if to_time == "latest":
        return Target()
    text = to_time.strip().replace("Z", "+00:00")
    if re.search(r"[+-][0-9]{2}$", text):
        text += ":00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise UsageError(
            f"--to-time {to_time!r}: not a time with a UTC offset",
            hint='say "2026-12-01 17:59:30+00" (or "latest")',
        )
    return Target(time=when.astimezone(UTC))


# -- choosing the base backup and the WAL -------------------------------------------


@dataclass(frozen=True)
class BaseBackup:
    snapshot: str  # the snapshot that took it
    source: str
    obj: ObjectRecord
    facts: postgres.BaseFacts


def base_in(
    storage: Storage, manifest: Manifest, source: str, identities: Sequence[Identity]
) -> BaseBackup | None:
    """The base backup *manifest* holds for *source* (taken, or referenced from an
    earlier snapshot), with its facts read from its facts object, or for a
    snapshot that took it before facts objects existed, from its private part.
    None when it holds none; raise IntegrityError when its facts are missing or
    bad (VkError when they cannot be read)."""
    obj = next((o for o in manifest.objects if o.source == source and o.role == "pg-base"), None)
    if obj is None:
        return None
    origin = manifest.origin(obj)
    facts_obj = next(
        (
            o
            for o in manifest.objects
            if o.source == source and o.role == "pg-base-facts" and manifest.origin(o) == origin
        ),
        None,
    )
    if facts_obj is not None:
        text = read_object(storage, facts_obj, identities).decode(errors="replace")
        try:
            doc = postgres.parse_base_facts(text, facts_obj.key)
        except SnapshotError as e:
            raise IntegrityError(str(e)) from None
        return BaseBackup(origin, source, obj, postgres.BaseFacts.decode(doc, facts_obj.key))
    if origin == manifest.id:
        entry = read_private(manifest, identities).sources.get(source)
        meta = entry.meta if entry is not None else None
        if isinstance(meta, postgres.Meta) and meta.base is not None:
            return BaseBackup(origin, source, obj, meta.base)
    raise IntegrityError(f"{obj.key}: the base backup's facts (start, end, timeline) are missing")


def find_bases(
    storage: Storage, host: str, source: str, identities: Sequence[Identity]
) -> tuple[list[BaseBackup], list[str]]:
    """Every base backup of *source* a complete snapshot of *host* holds (taken or
    referenced: a base backup outlives the snapshot that took it while later ones
    reference it), oldest first, and warnings naming what could not be read."""
    bases: dict[str, BaseBackup] = {}
    warnings: list[str] = []
    for manifest in catalog.load_all(storage, host):
        if manifest.status != "complete":
            continue
        try:
            base = base_in(storage, manifest, source, identities)
        except VkError as e:
            warnings.append(f"snapshot {manifest.id}: its base backup cannot be used: {e}")
            continue
        if base is not None:
            bases.setdefault(base.obj.key, base)
    return sorted(bases.values(), key=lambda b: b.facts.end_time), warnings


def choose_base(bases: Sequence[BaseBackup], target: Target, source: str) -> BaseBackup:
    """The newest base backup a recovery to *target* can start from. Raise RestoreError
    naming the oldest one when the target is before every base backup."""
    if not bases:
        raise RestoreError(
            f"source {source}: no snapshot holds a base backup: point-in-time recovery "
            "needs one (pitr = true, then `vkbackup snapshot`)"
        )
    if target.time is not None:
        fit = [b for b in bases if b.facts.end_time <= target.time]
    elif target.lsn is not None:
        fit = [b for b in bases if b.facts.end_lsn <= target.lsn]
    else:
        fit = list(bases)
    if not fit:
        first = bases[0]
        raise RestoreError(
            f"source {source}: {target.describe()} is before the oldest base backup "
            f"(snapshot {first.snapshot}, ended {first.facts.end_time.isoformat()}, "
            f"LSN {wal.format_lsn(first.facts.end_lsn)})"
        )
    return fit[-1]


def wal_records(storage: Storage, host: str) -> tuple[list[wal.WalRecord], list[str]]:
    """Every WAL record of *host* whose signature checks, and warnings naming the rest.
    A partial's record is swapped while the stream runs (its signature first, then
    the record): one read between the two is read again."""
    records: list[wal.WalRecord] = []
    warnings: list[str] = []
    for info in storage.list(wal.wal_prefix(host)):
        parsed = wal.parse_record_key(info.key)
        if parsed is None:
            continue
        for attempt in range(3):
            try:
                data = catalog.read_small(storage, info.key, wal.MAX_RECORD_BYTES)
                records.append(wal.WalRecord.decode(data, info.key))
                break
            except ObjectNotFoundError:
                break  # its segment is whole now: the full record is listed too
            except VkError as e:
                if parsed[3] == "partial" and attempt < 2:
                    time.sleep(0.5)
                    continue
                warnings.append(f"{info.key}: ignored: {e}")
    return records, warnings


def choose_wal(
    records: Sequence[wal.WalRecord], base: BaseBackup, target: Target, skew: timedelta
) -> tuple[list[wal.WalRecord], wal.Chain]:
    """The WAL records to stage for recovering *base* to *target*. Raise RestoreError
    when the chain does not reach the target, naming where it ends and any gap."""
    f = base.facts
    chain = wal.chain_from(records, f.timeline, f.start_lsn, f.system_identifier)
    end = chain.end_time.isoformat() if chain.end_time is not None else "nowhere"
    gaps = f"; missing segments: {', '.join(chain.gaps[:5])}" if chain.gaps else ""
    if chain.end_lsn < f.end_lsn:
        raise RestoreError(
            f"the WAL stored from base backup {base.snapshot} on (timeline {f.timeline}, "
            f"{wal.format_lsn(f.start_lsn)}) stops at {wal.format_lsn(chain.end_lsn)}, "
            f"before the backup is consistent ({wal.format_lsn(f.end_lsn)}){gaps}",
            hint="is `vkbackup wal-stream` running? `journalctl -u vkbackup-wal-stream`",
        )
    if target.time is not None and not wal.covers(chain, target.time - skew):
        raise RestoreError(
            f"{target.describe()} is after the newest WAL stored from base backup "
            f"{base.snapshot} on (stored {end}, up to {wal.format_lsn(chain.end_lsn)}){gaps}",
            hint="choose an earlier --to-time, or --to-time latest",
        )
    if target.lsn is not None and chain.end_lsn < target.lsn:
        raise RestoreError(
            f"{target.describe()} is beyond the WAL stored from base backup {base.snapshot} "
            f"on (up to {wal.format_lsn(chain.end_lsn)}){gaps}"
        )
    history = [chain.history] if chain.history is not None else []
    if target.lsn is not None:
        # up to the segment holding the target, and the next one: the record that
        # ends recovery starts at or after the target and may run into it
        k = len([r for r in chain.segments if r.start_lsn <= target.lsn])
        chosen = list(chain.segments[: k + 1])
        if chain.partial is not None and k >= len(chain.segments):
            chosen.append(chain.partial)  # the target's segment is the last whole one
        return history + chosen, chain
    # every segment from the base backup on, for a time too: when a segment was
    # stored says nothing of when its records were written (after an outage of
    # the stream, old WAL is stored late), and PostgreSQL stops at the target
    partial = [chain.partial] if chain.partial is not None else []
    return [*history, *chain.segments, *partial], chain


def wal_object(rec: wal.WalRecord, source: str) -> ObjectRecord:
    """The WAL object as the restore's object reader takes it: its record pins the
    ciphertext's size and sha256, as a manifest does a snapshot's objects."""
    return ObjectRecord(
        key=rec.key,
        source=source,
        name=rec.key.rsplit("/", 1)[-1],
        role=f"wal-{rec.kind}",
        size=rec.size,
        sha256=rec.sha256,
    )


# -- the plan ---------------------------------------------------------------------


def pitr_source(manifest: Manifest, plan: Plan) -> Step:
    """The database step of the snapshot's one source with base backups. Raise
    RestoreError when there is none."""
    with_base = {o.source for o in manifest.objects if o.role == "pg-base"}
    steps = [s for s in plan.steps if s.kind == "database" and s.source in with_base]
    if not steps:
        raise RestoreError(
            f"snapshot {manifest.id} has no postgres source with base backups "
            "(pitr = true): --to-time and --to-lsn need one"
        )
    return steps[0]


def apply(
    plan: Plan,
    manifest: Manifest,
    storage: Storage,
    identities: Sequence[Identity],
    target: Target,
    skew: timedelta,
) -> Plan:
    """*plan* with its PITR source's database step recovering to *target*."""
    step = pitr_source(manifest, plan)
    assert step.source is not None and isinstance(step.params, DatabaseParams)
    bases, warnings = find_bases(storage, manifest.host, step.source, identities)
    base = choose_base(bases, target, step.source)
    records, bad = wal_records(storage, manifest.host)
    chosen, chain = choose_wal(records, base, target, skew)
    for name in chain.foreign:
        warnings.append(f"WAL {name}: from another cluster (system identifier): ignored")
    staged = tuple(r.name for r in chosen)  # a partial is staged under its segment's name
    seg_size = next((r.segment_size for r in chosen), wal.DEFAULT_SEGMENT_SIZE)
    p = step.params
    params = PitrParams(
        container=p.container,
        project=p.project,
        service=p.service,
        database=p.database,
        user=p.user,
        major=base.facts.major,
        data_directory=base.facts.data_directory,
        base_snapshot=base.snapshot,
        target_time=target.time.isoformat() if target.time is not None else "",
        target_lsn=wal.format_lsn(target.lsn) if target.lsn is not None else "",
        wal=staged,
        segment_size=seg_size,
        wal_until=max((r.time for r in chosen), default=base.facts.end_time).isoformat(),
    )
    title = (
        f"recover database {p.database} to {target.describe()} "
        f"(base backup of {base.snapshot} + {len(chosen)} WAL files)"
    )
    objects = [base.obj, *(wal_object(r, step.source) for r in chosen)]
    new = Step(step.id, title, params, step.source, objects, step.after)
    steps = [new if s is step else s for s in plan.steps]
    return replace(plan, steps=steps, warnings=[*plan.warnings, *warnings, *bad])


def snapshot_for(storage: Storage, host: str | None, target: Target) -> str:
    """The snapshot a restore to *target* rebuilds the rest of the host from: the
    newest complete one taken at or before the target time ("latest" otherwise)."""
    if target.time is None:
        return "latest"
    complete = [m.id for m in catalog.load_all(storage, host) if m.status == "complete"]
    fit = [sid for sid in complete if snapshot_time(sid) <= target.time]
    if not fit:
        oldest = f": the oldest is {min(complete)}" if complete else ""
        raise RestoreError(
            f"no complete snapshot{' of ' + host if host else ''} was taken before "
            f"{target.describe()}{oldest}; point-in-time recovery reaches back to the "
            "end of the oldest kept base backup"
        )
    return max(fit)


# -- on the target -------------------------------------------------------------------


def data_host_path(mounts_json: str, data_directory: str, container: str) -> str:
    """Given `docker inspect -f '{{json .Mounts}}'` of the database's container and its
    data directory, return where that directory is on the host. Raise RestoreError
    when no mount holds it (it would be in the container's own layer)."""
    import json
    import posixpath

    try:
        mounts = json.loads(mounts_json)
    except ValueError:
        raise RestoreError(f"container {container}: unreadable mounts") from None
    best: tuple[str, str] | None = None
    for m in mounts if isinstance(mounts, list) else []:
        if not isinstance(m, dict):
            continue
        dest, src = m.get("Destination"), m.get("Source")
        if not isinstance(dest, str) or not isinstance(src, str) or not src.startswith("/"):
            continue
        inside = data_directory == dest or data_directory.startswith(dest.rstrip("/") + "/")
        if inside and (best is None or len(dest) > len(best[0])):
            best = (dest, src)
    if best is None:
        raise RestoreError(
            f"container {container}: no volume or bind mount holds its data directory "
            f"{data_directory}: the recovered cluster would not outlive the container"
        )
    rel = posixpath.relpath(data_directory, best[0])
    path = posixpath.normpath(posixpath.join(best[1], rel))
    root = best[1].rstrip("/")
    inside = path == best[1] or path.startswith(root + "/")
    if not inside or any(ord(c) < 32 for c in path):
        raise RestoreError(f"container {container}: data directory {data_directory} escapes")
    return path


def extract_base_script(compression: str) -> str:
    """Bash that empties the data directory ($1 on the host) and extracts the base tar
    on stdin into it."""
    dec = DECOMPRESSORS[compression]
    head = (shlex.join(dec) + " | ") if dec else ""
    return f"""
D="$1"
[ -d "$D" ] && [ "$D" != / ] || {{ printf 'no data directory %s\\n' "$D" >&2; exit 1; }}
find "$D" -mindepth 1 -delete
{head}tar -C "$D" -xpf - --numeric-owner --same-owner
"""


def settings_lines(p: PitrParams) -> list[str]:
    """The recovery settings appended to postgresql.auto.conf (reset after promotion)."""
    lines = [
        f"restore_command = 'cp {STAGE_DIR}/%f \"%p\"'",
        "recovery_target_action = 'promote'",
    ]
    if p.target_time:
        when = datetime.fromisoformat(p.target_time).astimezone(UTC)
        lines.append(f"recovery_target_time = '{when.strftime('%Y-%m-%d %H:%M:%S.%f+00')}'")
    elif p.target_lsn:
        lines.append(f"recovery_target_lsn = '{wal.format_lsn(wal.parse_lsn(p.target_lsn))}'")
    return lines


STAGE_SCRIPT = f"""
D="$1"; shift
W="$D/{STAGE_DIR}"
rm -rf "$W"; mkdir -m 0700 "$W"
tar -C "$W" -xf - --no-same-owner --no-same-permissions
printf '%s\\n' '# vkbackup: point-in-time recovery (reset once promoted)' "$@" \\
  >> "$D/postgresql.auto.conf"
: > "$D/recovery.signal"
chown -R --reference="$D" "$W" "$D/recovery.signal"
chmod 0600 "$D/recovery.signal"
"""


def wait_promoted_script(container: str, user: str, seconds: int) -> str:
    """Bash that starts *container* and waits until its server left recovery, then
    prints the log lines that say where recovery stopped. A server that stops, or
    that Docker restarts (its restart policy: a FATAL recovery would loop), fails
    at once with its log since the start."""
    q = shlex.quote
    return f"""
C={q(container)}
T0=$(date +%s)
FMT='{{{{.State.Running}}}} {{{{.State.Restarting}}}} {{{{.RestartCount}}}}'
docker start "$C" >/dev/null
# read after the start: `docker start` sets the restart count back to 0
RC0=$(docker inspect -f '{{{{.RestartCount}}}}' "$C")
fail() {{
  echo "PostgreSQL in $C $1:" >&2
  docker logs --since "$T0" "$C" 2>&1 | tail -n 15 >&2 || true
  docker stop "$C" >/dev/null 2>&1 || true
  exit 1
}}
for i in $(seq 1 {int(seconds)}); do
  state=$(docker inspect -f "$FMT" "$C")
  [ "$state" = "true false $RC0" ] || fail "stopped during recovery"
  r=$(docker exec "$C" psql -X -A -t -U {q(user)} -d postgres -c 'SELECT pg_is_in_recovery()' \\
      2>/dev/null || true)
  if [ "$r" = f ]; then
    docker logs --since "$T0" "$C" 2>&1 \\
      | grep -E 'recovery stopping|last completed transaction' || true
    exit 0
  fi
  sleep 1
done
fail "still recovering after {int(seconds)} s"
"""


def image_major_argv(image: str) -> list[str]:
    """argv printing the PostgreSQL version of *image*'s server binary."""
    return ["docker", "run", "--rm", "--network", "none", "--entrypoint", "postgres", image,
            "--version"]  # fmt: skip


#: each its own -c (ALTER SYSTEM refuses to run inside a transaction block)
RESET_SQL = (
    *(f"ALTER SYSTEM RESET {name};" for name in RECOVERY_SETTINGS),
    "SELECT pg_reload_conf();",
)


def read_wal(ctx: StepContext, obj: ObjectRecord, segment_size: int) -> bytes:
    """One WAL object's verified plaintext (at most a segment: held in memory)."""
    with open_object(ctx.storage, obj, ctx.identities) as stream:
        chunks: list[bytes] = []
        total = 0
        while chunk := stream.read(CHUNK):
            total += len(chunk)
            if total > segment_size:
                raise IntegrityError(f"{obj.key}: larger than a WAL segment")
            chunks.append(chunk)
    return b"".join(chunks)


def stored_again(storage: Storage, obj: ObjectRecord, source: str) -> ObjectRecord | None:
    """The stream stores a segment's partial again and again while a restore runs, and
    deletes it once the whole segment is stored (and stores a whole segment again
    after a restart that began before it): given a WAL object that no longer
    matches the record the plan read, return the segment's whole object, else its
    current partial (records read again, signatures checked), else None."""
    parsed = wal.parse_object_key(obj.key)
    if parsed is None:
        return None
    host, tli, name, was = parsed
    # a whole segment is only ever replaced by itself; a partial by the whole segment,
    # or by a longer partial (never a stale shorter one: replay would stop early)
    for kind in ("full",) if was == "full" else ("full", "partial"):
        key = wal.record_key(wal.object_key(host, tli, name, kind))
        try:
            rec = wal.WalRecord.decode(catalog.read_small(storage, key, 64 * 1024), key)
        except VkError:
            continue
        if rec.sha256 == obj.sha256:
            continue
        # (age's size grows with the plaintext's, for the same recipients)
        if kind == "partial" and rec.size <= obj.size:
            continue
        return wal_object(rec, source)
    return None


class WalTar:
    """A Readable tar of the staged WAL: each object read, verified and decrypted
    (one segment in memory at a time), a partial zero-padded to a whole segment."""

    def __init__(
        self,
        ctx: StepContext,
        objects: Sequence[ObjectRecord],
        names: Sequence[str],
        segment_size: int,
    ) -> None:
        self._parts = self._generate(ctx, objects, names, segment_size)
        self._part = b""
        self._at = 0

    def _generate(
        self,
        ctx: StepContext,
        objects: Sequence[ObjectRecord],
        names: Sequence[str],
        segment_size: int,
    ) -> Iterator[bytes]:
        for obj, name in zip(objects, names, strict=True):
            for _ in range(5):
                try:
                    data = read_wal(ctx, obj, segment_size)
                    break
                except (IntegrityError, CryptoError, ObjectNotFoundError):
                    newer = stored_again(ctx.storage, obj, obj.source)
                    if newer is None:
                        raise
                    log.info("%s was stored again meanwhile: reading %s", obj.key, newer.key)
                    obj = newer
            else:
                raise IntegrityError(f"{obj.key}: changed on every read")
            if obj.role == "wal-partial":
                data = wal.pad_segment(data, segment_size)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            yield info.tobuf(format=tarfile.USTAR_FORMAT)
            yield data
            if len(data) % tarfile.BLOCKSIZE:
                yield b"\0" * (tarfile.BLOCKSIZE - len(data) % tarfile.BLOCKSIZE)
            ctx.verified.append(
                f"{obj.key}: size and sha256 match its signed record, age authenticated"
            )
        yield b"\0" * (tarfile.BLOCKSIZE * 2)

    def read(self, n: int = -1, /) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        want = n
        while self._at >= len(self._part):
            part = next(self._parts, None)
            if part is None:
                return b""
            self._part, self._at = part, 0
        out = self._part[self._at : self._at + want]
        self._at += len(out)
        return out


def recover(ctx: StepContext, step: Step) -> str:
    """The PITR database step (see the module docstring)."""
    p = step.params
    assert isinstance(p, PitrParams)
    t = ctx.t
    # stopped, too: a re-run after a failure finds it as this step left it
    found = postgres.find_container(
        t, DatabaseParams(container=p.container, project=p.project, service=p.service,
                          database=p.database), stopped=True,
    )  # fmt: skip
    image = t.run(["docker", "inspect", "-f", "{{.Config.Image}}", found]).stdout.decode().strip()
    # the server is not started to ask it: a failed earlier attempt may have left a
    # data directory it cannot start from; the image's binary says its version
    res = t.run(image_major_argv(image), check=False)
    m = re.search(r"\(PostgreSQL\) ([0-9]+)", res.stdout.decode(errors="replace"))
    if m is None:
        log.warning(
            "%s: cannot read the PostgreSQL version of image %s (%s): PostgreSQL itself "
            "refuses a base backup of another major", t.name, image, res.stderr.strip()[-200:],
        )  # fmt: skip
    elif int(m.group(1)) != p.major:
        raise RestoreError(
            f"{t.name}: container {found} runs {image}, PostgreSQL {m.group(1)}; the base "
            f"backup is from PostgreSQL {p.major}",
            hint="a base backup restores only into the same major version: set the recorded "
            "image in the compose file",
        )
    mounts = t.run(["docker", "inspect", "-f", "{{json .Mounts}}", found]).stdout.decode()
    data = data_host_path(mounts, p.data_directory, found)
    t.run(["docker", "stop", found])
    base, segments = step.objects[0], step.objects[1:]
    ctx.feed(
        base,
        lambda compression: [*pipeline_argv(extract_base_script(compression)), "x", data],
        tar=TarCheck.volume(),
    )
    t.feed(
        [*pipeline_argv(STAGE_SCRIPT), "x", data, *settings_lines(p)],
        WalTar(ctx, segments, p.wal, p.segment_size),
    )
    res = t.run(pipeline_argv(wait_promoted_script(found, p.user, 6 * 3600)), timeout=7 * 3600)
    t.run(["docker", "exec", found, *postgres.psql_command(p.user, "postgres", *RESET_SQL)])
    t.run([*pipeline_argv('rm -rf "$1/' + STAGE_DIR + '"'), "x", data])
    reached = recovery_point(res.stdout.decode(errors="replace"))
    ctx.verified.append(
        f"database {p.database}: recovered from base backup {p.base_snapshot} and "
        f"{len(segments)} WAL files to {reached or 'the end of the WAL'}"
    )
    return f"recovered to {reached or 'the end of the WAL'} ({len(segments)} WAL files)"


_STOP_RE = re.compile(
    r"recovery stopping (?:before|after) (?:commit|abort) of transaction \d+, time (.+)"
)
_LAST_RE = re.compile(r"last completed transaction was at log time (.+)")


def recovery_point(log_text: str) -> str | None:
    """The time of the last transaction replayed, from the server's log."""
    found: str | None = None
    for line in log_text.splitlines():
        m = _STOP_RE.search(line) or _LAST_RE.search(line)
        if m:
            found = m.group(1).strip()
    return found
