"""`vkbackup wal-stream`: prod's WAL, continuously, into storage.

Why this shape:

- **PostgreSQL's own receiver.** The backup machine runs the stock
  `pg_receivewal`: it speaks the replication protocol, follows timeline
  switches and fetches history files; nothing vkbackup writes reimplements
  that. It reaches the database container through the host's sshd
  (`vkbackup.pitr.tunnel`): no agent, no port published on prod.
- **A spool in memory.** pg_receivewal writes segments to a directory. That
  directory must be memory (tmpfs), checked at start, so an unencrypted WAL
  byte never reaches the backup machine's disk. It holds the segment being
  received plus any finished one not yet stored: 16 MiB each.
- **Stored as age objects with signed records.** Each finished segment is
  encrypted to the snapshot recipients and stored with its record
  (`vkbackup.pitr.wal`); the record is signed by the storage wrapper, and a
  restore trusts an object only through it. The segment still being written
  is stored as a partial at most every `pitr.max_lag / 2` when it changed, so
  what prod committed reaches storage within max_lag. A partial never
  replaces a longer one of the same segment (after a restart the segment is
  received again from its start). Once the full segment is stored its
  partial is deleted.
- **The slot is advanced by us, not by pg_receivewal.** A physical
  replication slot (`pitr.slot`) makes prod keep every WAL segment from its
  restart_lsn on. pg_receivewal runs without it (it would report what it
  wrote to the spool, which a backup-machine crash loses); vkbackup moves the
  slot with `pg_replication_slot_advance` to the start of the first segment
  not yet stored in full. So an SSH cut, a restart of prod, of this process
  or of the whole backup machine loses nothing: each start puts an empty
  partial of the slot's segment in the spool, and pg_receivewal starts
  there. The price is disk on prod while the stream is down: the slot's lag
  is checked every minute against `pitr.max_slot_lag_mib` (a warning at
  half, a monitoring failure at the full value). It never blocks prod:
  pg_receivewal is an asynchronous standby, never named in
  synchronous_standby_names.
- **Faults are retried, forever, with backoff** (1 s doubling to 60 s): a
  lost connection, pg_receivewal exiting, storage refusing a put (the segment
  stays in the spool and is tried again). Prod's facts (system identifier,
  segment size) are kept beside the spool, so what it still holds is stored
  after every session, even when prod can no longer be reached. SIGTERM stops
  pg_receivewal, stores everything in the spool (the partial too) and exits 0.
  One stream per spool: a lock beside it refuses a second.
- **Reported.** A healthchecks ping (job `wal-stream`) every 5 minutes:
  success while the stream is up and stored within 2 x max_lag, failure with
  the reason otherwise; and, with `monitoring.textfile`, a textfile of its own
  beside it (`vkbackup-wal-<host>.prom`) with whether the stream is up, the
  time of the newest stored WAL and the slot's lag in bytes.

The SQL it runs on prod goes through `docker exec ... psql` as the source's
user (like the snapshot's), not through the replication connection: facts,
the slot, its lag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vkbackup import monitoring
from vkbackup.config.model import MonitoringConfig
from vkbackup.crypto import EncryptingReader, Recipient
from vkbackup.errors import (
    ConfigError,
    IntegrityError,
    ObjectNotFoundError,
    StorageError,
    VkError,
)
from vkbackup.logs import get_logger, register_secret
from vkbackup.pitr import wal
from vkbackup.sources.postgres import psql_argv, server_major
from vkbackup.storage.base import Storage
from vkbackup.streams import BytesReader, HashingReader, Readable
from vkbackup.transport.base import Transport
from vkbackup.transport.ssh import SshTransport

log = get_logger("pitr")

JOB = "wal-stream"
HEARTBEAT = 300.0
LAG_CHECK = 60.0
STALL_SLACK = 8192  # bytes prod may be ahead of what is stored without a "stalled"
GAP_REPORTED = 86400.0  # a gap found at a start is a monitoring failure for a day
MAX_BACKOFF = 60.0
MEMORY_FS = ("tmpfs", "ramfs")
HISTORY_RE = re.compile(r"^[0-9A-F]{8}\.history\Z")
SEGMENT_RE = re.compile(r"^[0-9A-F]{24}\Z")


# -- the spool -------------------------------------------------------------------


def filesystem_type(path: Path, mountinfo: str | None = None) -> str:
    """The type of the filesystem *path* (resolved) is on, from /proc/self/mountinfo."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    target = str(path.resolve())
    best, kind = "", "unknown"
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, right.split()[0]
    return kind


def open_spool(directory: Path, mountinfo: str | None = None) -> Path:
    """Create *directory* (0700) and return it. Raise ConfigError when it is not
    memory-backed (a partial segment would land unencrypted on disk), or when it
    already exists as anything but a directory of ours that no one else may
    write: /dev/shm is writable by every user and emptied at each boot, so
    another user could create the spool first, read the WAL or swap the socket
    pg_receivewal logs in through."""
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise ConfigError(
            f"pitr.spool_dir: {directory.parent} does not exist",
            hint="create it (root's, mode 0700), or point spool_dir into /dev/shm",
        ) from None
    st = directory.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise ConfigError(
            f"pitr.spool_dir {directory}: not a directory of this user's with mode 0700 "
            f"(mode {stat.filemode(st.st_mode)}, owner uid {st.st_uid}): refusing to put "
            "prod's WAL there",
            hint="point pitr.spool_dir at a new directory vkbackup creates itself, "
            "such as /dev/shm/vkbackup-wal; find out who made this one before removing it",
        )
    kind = filesystem_type(directory, mountinfo)
    if kind not in MEMORY_FS:
        raise ConfigError(
            f"pitr.spool_dir {directory} is on {kind}, not in memory: pg_receivewal would "
            "write prod's WAL there unencrypted",
            hint="point pitr.spool_dir at a new directory in a tmpfs, such as "
            "/dev/shm/vkbackup-wal (the default); /dev/shm and /run are tmpfs on Debian",
        )
    return directory


@dataclass(frozen=True)
class SpoolFiles:
    finished: list[str]  # segment and history file names, in order
    partial: str | None  # the segment name of the one .partial file, if any


def scan(directory: Path, segment_size: int) -> SpoolFiles:
    """What pg_receivewal left in the spool: finished segments (full size) and
    history files, and the segment being received."""
    finished: list[str] = []
    partials: list[str] = []
    for entry in os.scandir(directory):
        name = entry.name
        whole = SEGMENT_RE.match(name) and entry.stat().st_size == segment_size
        if HISTORY_RE.match(name) or whole:
            finished.append(name)
        elif name.endswith(".partial") and SEGMENT_RE.match(name[: -len(".partial")]):
            partials.append(name[: -len(".partial")])
    # history files first: a restore needs a timeline's history before its segments
    finished.sort(key=lambda n: (not n.endswith(".history"), n))
    return SpoolFiles(finished, max(partials) if partials else None)


def seed(directory: Path, name: str, segment_size: int) -> None:
    """Put an empty (sparse, zero) `<name>.partial` in an empty spool: pg_receivewal
    starts receiving at the start of that segment."""
    path = directory / f"{name}.partial"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, segment_size)
    finally:
        os.close(fd)


# -- prod ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProdFacts:
    system_identifier: str
    segment_size: int
    major: int
    timeline: int
    in_recovery: bool


FACTS_SQL = (
    "SELECT system_identifier::text, current_setting('wal_segment_size', true), "
    "(SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), "
    "current_setting('server_version_num'), "
    "(SELECT timeline_id FROM pg_control_checkpoint())::text, pg_is_in_recovery()::text "
    "FROM pg_control_system();"
)


def parse_facts(text: str, where: str) -> ProdFacts:
    fields = text.strip().split("\t")
    if len(fields) != 6:
        raise IntegrityError(f"{where}: unexpected answer to the facts query: {text[:200]!r}")
    sysid, _shown, seg, version, tli, recovery = fields
    if not (sysid.isdigit() and seg.isdigit() and version.isdigit() and tli.isdigit()):
        raise IntegrityError(f"{where}: unexpected answer to the facts query: {text[:200]!r}")
    if not wal.valid_segment_size(int(seg)):
        raise IntegrityError(f"{where}: wal_segment_size {seg} is not a valid size")
    return ProdFacts(sysid, int(seg), server_major(int(version)), int(tli), recovery == "true")


APPLICATION_NAME = "vkbackup_wal_stream"


def names_the_stream(setting: str, application_name: str = APPLICATION_NAME) -> bool:
    """Whether prod's synchronous_standby_names ("", "*", "FIRST 1 (a, b)", "ANY 2
    (\"x\", y)") would take the stream for a synchronous standby: then every commit
    on prod would wait for it, which it must never do."""
    inside = setting.split("(", 1)[1].rsplit(")", 1)[0] if "(" in setting else setting
    for quoted, bare in re.findall(r'"((?:[^"]|"")*)"|([^,\s]+)', inside):
        name = quoted.replace('""', '"') if quoted else bare
        # PostgreSQL compares standby names case-insensitively; "*" matches any
        if name == "*" or name.lower() == application_name.lower():
            return True
    return False


def _literal(text: str) -> str:
    """A SQL string literal. The SQL below is built from the slot's name (checked by
    the config loader: [a-z0-9_]) and LSNs this module formats, each through here;
    that is why its lines carry `noqa: S608`."""
    return "'" + text.replace("'", "''") + "'"


class ProdDb:
    """The SQL the stream runs on prod, through `docker exec psql` on *t*."""

    def __init__(self, t: Transport, container: str, user: str, slot: str) -> None:
        self.t = t
        self.container = container
        self.user = user
        self.slot = slot

    def query(self, sql: str) -> str:
        res = self.t.run(psql_argv(self.container, self.user, "postgres", sql))
        return res.stdout.decode(errors="replace")

    def facts(self) -> ProdFacts:
        return parse_facts(self.query(FACTS_SQL), f"{self.t.name}: {self.container}")

    def synchronous_standby_names(self) -> str:
        return self.query("SHOW synchronous_standby_names;").strip()

    def ensure_slot(self) -> int:
        """Create the slot (reserving WAL now) unless it exists; return its restart_lsn."""
        s = _literal(self.slot)
        out = (
            self.query(
                f"SELECT pg_create_physical_replication_slot({s}, true) WHERE NOT EXISTS "  # noqa: S608
                f"(SELECT 1 FROM pg_replication_slots WHERE slot_name = {s});"
                f"SELECT slot_type || E'\\t' || coalesce(restart_lsn::text, '') "
                f"FROM pg_replication_slots WHERE slot_name = {s};"
            )
            .strip()
            .splitlines()
        )
        where = f"{self.t.name}: {self.container}: replication slot {self.slot}"
        kind, _, lsn = (out[-1] if out else "").partition("\t")
        if kind != "physical":
            raise IntegrityError(f"{where} is {kind or 'missing'}, not a physical slot")
        if not lsn:
            raise IntegrityError(
                f"{where} reserves no WAL (restart_lsn is empty)",
                hint=f"drop it (SELECT pg_drop_replication_slot({s})); the stream recreates it",
            )
        return wal.parse_lsn(lsn)

    def advance(self, lsn: int) -> None:
        """Move the slot forward to *lsn* (never back)."""
        s, to = _literal(self.slot), _literal(wal.format_lsn(lsn))
        self.query(
            f"SELECT pg_replication_slot_advance(slot_name, {to}::pg_lsn) "  # noqa: S608
            f"FROM pg_replication_slots WHERE slot_name = {s} AND restart_lsn < {to}::pg_lsn;"
        )

    def slot_lag(self) -> tuple[int, int | None]:
        """Prod's current WAL position, and the bytes of WAL the slot holds there
        (None: the slot is gone)."""
        s = _literal(self.slot)
        out = self.query(
            "SELECT pg_current_wal_lsn()::text || E'\\t' || coalesce((SELECT "  # noqa: S608
            "(pg_current_wal_lsn() - restart_lsn)::bigint::text FROM pg_replication_slots "
            f"WHERE slot_name = {s}), '');"
        ).strip()
        lsn, _, lag = out.partition("\t")
        return wal.parse_lsn(lsn), (int(lag) if lag.lstrip("-").isdigit() else None)

    def container_address(self) -> str:
        """The container's IP address on its first network, checked to be one."""
        import ipaddress

        res = self.t.run(
            [
                "docker", "inspect", "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", self.container,
            ]
        )  # fmt: skip
        for word in res.stdout.decode(errors="replace").split():
            with contextlib.suppress(ValueError):
                return str(ipaddress.ip_address(word))
        raise IntegrityError(f"{self.t.name}: container {self.container} has no IP address")


# -- storing ---------------------------------------------------------------------


@dataclass
class Stored:
    """What this process stored, for the partial rules and reports."""

    partial_size: dict[str, int] = field(default_factory=dict)  # segment -> longest stored
    partial_hash: dict[str, str] = field(default_factory=dict)
    partial_mtime: dict[str, int] = field(default_factory=dict)
    last_partial: float = 0.0  # monotonic time of the last partial put
    newest: datetime | None = None  # when the newest WAL was stored
    end_lsn: int = 0  # how far the WAL stored by this process reaches


class Store:
    """Encrypt and put WAL objects with their records."""

    def __init__(
        self,
        storage: Storage,
        recipients: Sequence[Recipient],
        host: str,
        facts: ProdFacts,
    ) -> None:
        self.storage = storage
        self.recipients = list(recipients)
        self.host = host
        self.facts = facts

    def put(self, tli: int, name: str, kind: str, plain: bytes) -> wal.WalRecord:
        """Store *plain* (a partial, trimmed: held in memory anyway). A partial goes
        under a key of its own each time (`wal.object_key`'s version): then its
        record is swapped, then the partial it replaces is deleted, so a reader
        always finds the object its record names, whole."""
        before = self.stored_partial(tli, name) if kind == "partial" else None
        version = secrets.token_hex(8) if kind == "partial" else ""
        rec = self._put(tli, name, kind, BytesReader(plain), len(plain), version)
        if before is not None and before.key != rec.key:
            with contextlib.suppress(StorageError):  # left over: prune removes it
                self.storage.delete(before.key)
        return rec

    def put_file(self, tli: int, name: str, kind: str, path: Path) -> wal.WalRecord:
        """Store the file at *path* (a whole segment), streamed: never all in memory."""
        with path.open("rb") as f:
            return self._put(tli, name, kind, f, os.fstat(f.fileno()).st_size)

    def _put(
        self, tli: int, name: str, kind: str, src: Readable, plain_size: int, version: str = ""
    ) -> wal.WalRecord:
        key = wal.object_key(self.host, tli, name, kind, version)
        cipher = HashingReader(EncryptingReader(src, self.recipients))
        self.storage.put(key, cipher, size_hint=plain_size + plain_size // 1000 + 512)
        rec = wal.WalRecord(
            host=self.host,
            timeline=tli,
            name=name,
            kind=kind,
            key=key,
            sha256=cipher.sha256_hex(),
            size=cipher.size,
            plain_size=plain_size,
            segment_size=self.facts.segment_size,
            system_identifier=self.facts.system_identifier,
            time=datetime.now(UTC),
        )
        self.storage.put(wal.record_key(key), BytesReader(rec.encode()))
        return rec

    def delete(self, tli: int, name: str, kind: str) -> None:
        """Delete a WAL object and its record (record first: no record, no use)."""
        rec = self.stored_partial(tli, name) if kind == "partial" else None
        key = rec.key if rec is not None else wal.object_key(self.host, tli, name, kind)
        self.storage.delete(wal.record_key(key))
        self.storage.delete(key)

    def stored_partial(self, tli: int, name: str) -> wal.WalRecord | None:
        """The record of the partial of *name* in storage (None: none, or unreadable)."""
        key = wal.record_key(wal.object_key(self.host, tli, name, "partial"))
        try:
            with self.storage.open(key) as f:
                return wal.WalRecord.decode(f.read(wal.MAX_RECORD_BYTES), key)
        except ObjectNotFoundError:
            return None
        except IntegrityError as e:  # a bad record names nothing worth keeping
            log.warning("%s: %s", key, e)
            return None
        # any other storage error propagates: 0 would let a shorter partial replace it

    def stored_partial_size(self, tli: int, name: str) -> int:
        """The plain size of the partial of *name* already in storage (0: none or unreadable)."""
        rec = self.stored_partial(tli, name)
        return rec.plain_size if rec is not None else 0


def _tli_of(name: str) -> int:
    return int(name[:8], 16)


def store_spool(
    spool: Path,
    store: Store,
    stored: Stored,
    *,
    partial_every: float,
    final: bool = False,
    advance: Callable[[int], None] | None = None,
) -> int:
    """Store what the spool holds: every finished file (then remove it), and the
    partial when it grew and *partial_every* seconds passed (or *final*).
    After each finished segment, *advance* gets the LSN the slot may move to.
    Return how many objects were put. A storage error propagates; what was not
    stored stays in the spool for the next try."""
    seg_size = store.facts.segment_size
    files = scan(spool, seg_size)
    count = 0
    for name in files.finished:
        path = spool / name
        if name.endswith(".history"):
            store.put_file(wal.parse_history_name(name), name, "history", path)
        else:
            tli, segno = wal.parse_segment_name(name, seg_size)
            store.put_file(tli, name, "full", path)
            stored.end_lsn = max(stored.end_lsn, wal.segment_start(segno + 1, seg_size))
            with contextlib.suppress(StorageError):  # its partial is no longer needed
                store.delete(tli, name, "partial")
            stored.partial_size.pop(name, None)
            stored.partial_hash.pop(name, None)
            stored.partial_mtime.pop(name, None)
            if advance is not None:
                try:
                    advance(wal.segment_start(segno + 1, seg_size))
                except VkError as e:  # stored: the next pass or start advances it
                    log.warning("%s: the slot stays behind %s for now: %s", store.host, name, e)
        path.unlink()
        stored.newest = datetime.now(UTC)
        log.info("%s: stored %s", store.host, name)
        count += 1
    if files.partial is not None:
        count += _store_partial(spool, store, stored, files.partial, partial_every, final)
    return count


def _store_partial(
    spool: Path, store: Store, stored: Stored, name: str, every: float, final: bool
) -> int:
    path = spool / f"{name}.partial"
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:  # finished meanwhile: the next pass stores it
        return 0
    if stored.partial_mtime.get(name) == mtime:
        return 0
    if not final and time.monotonic() - stored.last_partial < every:
        return 0
    seg_size = store.facts.segment_size
    if name not in stored.partial_size:  # a restart: what an earlier run stored
        floor = store.stored_partial_size(_tli_of(name), name)
        stored.partial_size[name] = floor
        start = wal.segment_start(wal.parse_segment_name(name, seg_size)[1], seg_size)
        stored.end_lsn = max(stored.end_lsn, start + floor)
    data = wal.trim_partial(path.read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if not data or len(data) <= stored.partial_size.get(name, 0):
        stored.partial_mtime[name] = mtime
        return 0  # nothing new, or still re-receiving what is stored already
    if stored.partial_hash.get(name) == digest:
        stored.partial_mtime[name] = mtime
        return 0
    store.put(_tli_of(name), name, "partial", data)  # on failure: tried again next pass
    segno = wal.parse_segment_name(name, store.facts.segment_size)[1]
    start = wal.segment_start(segno, store.facts.segment_size)
    stored.end_lsn = max(stored.end_lsn, start + len(data))
    stored.partial_mtime[name] = mtime
    stored.partial_size[name] = len(data)
    stored.partial_hash[name] = digest
    stored.last_partial = time.monotonic()
    stored.newest = datetime.now(UTC)
    return 1


# -- the loop --------------------------------------------------------------------


@dataclass(frozen=True)
class StreamSettings:
    host: str
    container: str
    user: str
    port: int
    role: str
    password: str
    slot: str
    spool: Path  # this host's spool directory
    max_lag: timedelta
    max_slot_lag_mib: int
    monitoring: MonitoringConfig
    pg_receivewal: str = "pg_receivewal"


def receiver_major(exe: str) -> int:
    """The PostgreSQL major of the local pg_receivewal. Raise ConfigError when absent."""
    try:
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ConfigError(
            f"{exe}: cannot run it ({e})",
            hint="install PostgreSQL's client tools on the backup machine "
            "(apt-get install postgresql-client)",
        ) from None
    m = re.search(r"\b([0-9]+)(?:\.[0-9]+)?", out)
    if m is None:
        raise ConfigError(f"{exe} --version: unexpected output {out.strip()[:100]!r}")
    return int(m.group(1))


def conninfo(socket_dir: Path, port: int, role: str) -> str:
    def q(v: str) -> str:
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return (
        f"host={q(str(socket_dir))} port={port} user={q(role)} application_name={APPLICATION_NAME}"
    )


class WalStream:
    """One host's stream; `run` until *stop* is set."""

    def __init__(
        self,
        settings: StreamSettings,
        connect: Callable[[], SshTransport],
        storage: Storage,
        recipients: Sequence[Recipient],
    ) -> None:
        self.s = settings
        self.connect = connect
        self.storage = storage
        self.recipients = recipients
        self.stored = Stored()
        self.up = False
        self.problem: str | None = None
        self.slot_lag: int | None = None
        self.seen: list[tuple[float, int]] = []  # (monotonic time, prod's WAL position)
        self.gap: tuple[float, str] | None = None  # (when, what): WAL lost on prod
        self._lock: int | None = None  # the spool's lock, held while the process lives
        register_secret(settings.password)

    # the public part ---------------------------------------------------------

    def preflight(self) -> None:
        """Raise ConfigError when the spool is not in memory or not ours only, or
        pg_receivewal is missing."""
        self._open_spool()
        receiver_major(self.s.pg_receivewal)

    def _open_spool(self) -> None:
        # [pitr] spool_dir (where the tunnel's socket directory goes too), then the host's
        open_spool(self.s.spool.parent)
        open_spool(self.s.spool)
        if self._lock is None:  # one stream per spool: two would undercut each other
            path = self.s.spool.parent / f"{self.s.host}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise ConfigError(
                    f"another vkbackup wal-stream of host {self.s.host} runs (it holds {path})",
                    hint="systemctl status vkbackup-wal-stream",
                ) from None
            self._lock = fd

    def run(self, stop: threading.Event) -> None:
        self._open_spool()
        backoff = 1.0
        last_beat = 0.0
        while not stop.is_set():
            started = time.monotonic()
            try:
                self._session(stop)
            except VkError as e:
                self.problem = str(e)
                log.error("%s: WAL stream: %s", self.s.host, e)
            except Exception as e:
                self.problem = f"{type(e).__name__}: {e}"
                log.error("%s: WAL stream: %s", self.s.host, self.problem, exc_info=True)
            self.up = False
            self._store_leftovers()
            if stop.is_set():
                break
            if time.monotonic() - started > 120:
                backoff = 1.0
            last_beat = self._report(last_beat, force=True)
            log.info("%s: WAL stream: trying again in %.0f s", self.s.host, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _facts_path(self) -> Path:
        return self.s.spool.parent / f"{self.s.host}.facts.json"

    def _remember(self, facts: ProdFacts) -> None:
        """Keep prod's facts beside the spool: what is left in it can then be stored
        while prod cannot be reached (it is gone: the case that matters most)."""
        doc = dataclasses.asdict(facts)
        tmp = self._facts_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self._facts_path())

    def _store_leftovers(self) -> None:
        """After a session ended, store what its spool still holds (a failed final
        store), with the facts of prod remembered at its start. Never raises."""
        try:
            doc = json.loads(self._facts_path().read_text())
            facts = ProdFacts(**doc)
        except (OSError, ValueError, TypeError):
            return  # no session reached prod yet: nothing was received
        try:
            store = Store(self.storage, self.recipients, self.s.host, facts)
            n = store_spool(self.s.spool, store, self.stored, partial_every=0, final=True)
            if n:
                log.info("%s: stored %d WAL files left in the spool", self.s.host, n)
        except (VkError, OSError) as e:
            log.error("%s: WAL stream: what the spool holds is not stored yet (%s)", self.s.host, e)

    # one connection ----------------------------------------------------------

    def _session(self, stop: threading.Event) -> None:
        t = self.connect()
        proc: subprocess.Popen[bytes] | None = None
        socket_dir = Path(tempfile.mkdtemp(prefix="vkbackup-wal-", dir=self.s.spool.parent))
        try:
            db = ProdDb(t, self.s.container, self.s.user, self.s.slot)
            facts = db.facts()
            self._remember(facts)
            store = Store(self.storage, self.recipients, self.s.host, facts)
            every = self.s.max_lag.total_seconds() / 2
            # what an earlier run left in the spool is stored first, whatever else is
            # wrong (the spool may hold the only copy); the slot moves if it can
            store_spool(
                self.s.spool, store, self.stored, partial_every=0, final=True, advance=db.advance
            )
            if facts.in_recovery:
                raise IntegrityError(
                    f"{t.name}: {self.s.container} is a standby; stream from the primary"
                )
            self._refuse_synchronous(db)
            mine = receiver_major(self.s.pg_receivewal)
            if mine < facts.major:
                raise ConfigError(
                    f"{self.s.pg_receivewal} is PostgreSQL {mine}; {t.name}: "
                    f"{self.s.container} runs {facts.major}, which it cannot stream",
                    hint=f"install postgresql-client-{facts.major} on the backup machine",
                )
            restart = db.ensure_slot()
            # prod keeps what the slot holds: nothing before it is still to be stored
            self.stored.end_lsn = max(self.stored.end_lsn, restart)
            self._seed(store, facts, restart)
            address = db.container_address()
            from vkbackup.pitr.tunnel import Tunnel

            with Tunnel(socket_dir, self.s.port, lambda: t.open_tcp(address, self.s.port)):
                proc = self._start_receiver(socket_dir)
                self.up = True
                self.problem = None
                log.info(
                    "%s: WAL stream: receiving from %s (%s) on timeline %d",
                    self.s.host, self.s.container, address, facts.timeline,
                )  # fmt: skip
                self._loop(stop, proc, db, store, every)
        finally:
            if proc is not None:
                _stop_receiver(proc)
                try:
                    store_spool(
                        self.s.spool, store, self.stored, partial_every=0, final=True,
                        advance=db.advance,
                    )  # fmt: skip
                    if stop.is_set():
                        log.info(
                            "%s: WAL stream stopped; everything received is stored", self.s.host
                        )
                except (VkError, OSError) as e:
                    log.error(
                        "%s: WAL stream: what the spool holds is not stored yet (%s); "
                        "the next start stores it", self.s.host, e,
                    )  # fmt: skip
            with contextlib.suppress(OSError):
                for p in socket_dir.iterdir():
                    p.unlink()
                socket_dir.rmdir()
            t.close()

    def _refuse_synchronous(self, db: ProdDb) -> None:
        """Raise ConfigError when prod's synchronous_standby_names takes the stream for
        a synchronous standby (checked at each start and every LAG_CHECK: a reload
        may change it): every commit on prod would then wait for it."""
        sync = db.synchronous_standby_names()
        if names_the_stream(sync):
            raise ConfigError(
                f"{db.t.name}: {self.s.container}: synchronous_standby_names = {sync!r} "
                f"takes the WAL stream ({APPLICATION_NAME}) for a synchronous standby: "
                "every commit on prod would wait for it; the stream stops",
                hint="name the real standbys there instead of '*'",
            )

    def _seed(self, store: Store, facts: ProdFacts, restart: int) -> None:
        segno = wal.segno_of(restart, facts.segment_size)
        name = wal.segment_name(facts.timeline, segno, facts.segment_size)
        spool = scan(self.s.spool, facts.segment_size)
        if spool.partial is not None:
            behind = wal.parse_segment_name(spool.partial, facts.segment_size)[1] < segno
            if not behind:
                return
            # the slot was dropped and made again (or invalidated): prod no longer has
            # the WAL from the spool's segment to the slot's. What the spool held is
            # stored already; the gap is named, and the stream goes on from the slot
            gap = (
                f"WAL from segment {spool.partial} up to {name} is gone from prod (its "
                f"replication slot {self.s.slot} was made again): a restore cannot replay "
                "across it; take a new base backup (vkbackup snapshot)"
            )
            self.gap = (time.monotonic(), gap)
            log.error("%s: %s", self.s.host, gap)
            (self.s.spool / f"{spool.partial}.partial").unlink()
        floor = store.stored_partial_size(facts.timeline, name)
        if floor:
            self.stored.partial_size[name] = max(floor, self.stored.partial_size.get(name, 0))
            start = wal.segment_start(segno, facts.segment_size)
            self.stored.end_lsn = max(self.stored.end_lsn, start + floor)
        seed(self.s.spool, name, facts.segment_size)
        log.info("%s: WAL stream: starting at segment %s (the slot's)", self.s.host, name)

    def _start_receiver(self, socket_dir: Path) -> subprocess.Popen[bytes]:
        argv = [
            self.s.pg_receivewal, "-D", str(self.s.spool),
            "-d", conninfo(socket_dir, self.s.port, self.s.role),
            "--no-loop", "--no-password", "--status-interval", "10", "--verbose",
        ]  # fmt: skip
        env = dict(os.environ, PGPASSWORD=self.s.password)
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env,
        )  # fmt: skip
        threading.Thread(target=_log_lines, args=(proc, self.s.host), daemon=True).start()
        return proc

    def _loop(
        self,
        stop: threading.Event,
        proc: subprocess.Popen[bytes],
        db: ProdDb,
        store: Store,
        every: float,
    ) -> None:
        last_lag = 0.0
        last_beat = 0.0
        while not stop.is_set():
            store_spool(self.s.spool, store, self.stored, partial_every=every, advance=db.advance)
            if time.monotonic() - last_lag >= LAG_CHECK:
                last_lag = time.monotonic()
                self._refuse_synchronous(db)
                self._check_slot(db)
            last_beat = self._report(last_beat)
            if proc.poll() is not None:
                raise VkError(
                    f"{self.s.host}: pg_receivewal exited with status {proc.returncode} "
                    "(its messages are in the log above)"
                )
            stop.wait(1.0)

    def _check_slot(self, db: ProdDb) -> None:
        """The slot's lag against pitr.max_slot_lag_mib, and whether what prod wrote
        2 x max_lag ago is stored (a stalled stream, a half-open connection): the
        problems are set afresh each time, so one that went away is cleared."""
        current, self.slot_lag = db.slot_lag()
        now = time.monotonic()
        self.seen.append((now, current))
        limit = self.s.max_slot_lag_mib * 1024 * 1024
        problems: list[str] = []
        if self.slot_lag is None:
            problems.append(f"replication slot {self.s.slot} is gone on {self.s.container}")
        elif self.slot_lag >= limit:
            problems.append(
                f"replication slot {self.s.slot} holds {self.slot_lag // 2**20} MiB of WAL on "
                f"prod (pitr.max_slot_lag_mib = {self.s.max_slot_lag_mib}): prod's disk fills "
                "while the stream is behind"
            )
        elif self.slot_lag >= limit // 2:
            log.warning(
                "%s: replication slot %s holds %d MiB of WAL on prod, half of "
                "pitr.max_slot_lag_mib (%d)",
                self.s.host, self.s.slot, self.slot_lag // 2**20, self.s.max_slot_lag_mib,
            )  # fmt: skip
        window = 2 * self.s.max_lag.total_seconds()
        old = [lsn for at, lsn in self.seen if now - at >= window]
        self.seen = [(at, lsn) for at, lsn in self.seen if now - at < window * 2]
        # slack: a stored partial ends before its trailing zeros, prod's position after
        # them (records are 8-byte aligned, the last often padded)
        if old and old[-1] > self.stored.end_lsn + STALL_SLACK:
            problems.append(
                f"prod wrote WAL up to {wal.format_lsn(old[-1])} more than {window:.0f} s "
                f"ago, and only up to {wal.format_lsn(self.stored.end_lsn)} is stored"
            )
        if self.gap is not None and time.monotonic() - self.gap[0] < GAP_REPORTED:
            problems.append(self.gap[1])
        self.problem = "; ".join(problems) or None
        if self.problem:
            log.error("%s: %s", self.s.host, self.problem)

    def _report(self, last: float, force: bool = False) -> float:
        now = time.monotonic()
        if not force and now - last < HEARTBEAT:
            return last
        mon = self.s.monitoring
        behind = None
        if self.stored.newest is not None:
            behind = (datetime.now(UTC) - self.stored.newest).total_seconds()
        problem = self.problem
        if problem is None and not self.up:
            problem = "the WAL stream is down"
        if problem is None:
            monitoring.notify(mon, "success", host=self.s.host, job=JOB)
        else:
            monitoring.notify(mon, "failure", host=self.s.host, job=JOB, reason=problem)
        if mon.textfile is not None:
            labels = (("host", self.s.host),)
            samples = [monitoring.Sample("vkbackup_wal_stream_up", labels, float(self.up))]
            if self.stored.newest is not None:
                samples.append(
                    monitoring.Sample(
                        "vkbackup_wal_last_stored_timestamp_seconds",
                        labels,
                        float(int(self.stored.newest.timestamp())),
                    )
                )
            if self.slot_lag is not None:
                samples.append(
                    monitoring.Sample("vkbackup_wal_slot_lag_bytes", labels, float(self.slot_lag))
                )
            path = Path(mon.textfile).with_name(f"vkbackup-wal-{self.s.host}.prom")
            monitoring.write_samples(path, samples)
        log.debug("%s: WAL stream report (stored %s s ago)", self.s.host, behind)
        return now


def _log_lines(proc: subprocess.Popen[bytes], host: str) -> None:
    assert proc.stderr is not None
    for raw in proc.stderr:
        line = raw.decode(errors="replace").rstrip()
        if line:
            log.info("%s: %s", host, line)


def _stop_receiver(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (pg_receivewal flushes and exits), then SIGKILL after 30 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
