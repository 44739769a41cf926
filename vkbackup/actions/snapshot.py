"""`vkbackup snapshot`: stream every source of a host into an encrypted snapshot.

    host --SSH exec--> source stream --> age encrypt --> storage put
                            |                               |
                            +---- sizes, sha256, facts ---> manifest (written LAST)

Tars and images are compressed on the host (snapshot.compression); a host
without zstd sends them uncompressed and they are compressed with zstd here,
before encryption (`vkbackup.zstd_compress`), recorded as any zstd object.

A run takes the host's lock, gathers host facts, runs the sources (in
parallel, cfg.snapshot.parallel at a time, each on its own SSH connection; a
connection a source finished well on is reused by the next), and commits the
manifest last. A stream whose fingerprint matches an object of the source's
previous snapshot (the newest, among the last ten, in which the source
succeeded) is referenced, not uploaded again (with Object Lock, its retention
is extended to cover this snapshot); if any object of that previous snapshot
is missing from storage, nothing of the source is reused.

Reuse also needs the same recipients. Each object records the tag of the
recipient set it was encrypted to (`recipient_set_tag`); when
encryption.recipients changes, an earlier object is encrypted to keys that
are no longer (or not all) configured, and referencing it would leave the new
snapshot readable by a revoked key and unreadable by a new one. So a source
whose previous objects carry another tag reuses nothing: it is taken again in
full (a volume starts a new chain) and encrypted to the current set.

Status: "complete" (every configured source ok), "partial" (some failed, or
--only left some out: the manifest says which; exit 3 only when one failed),
"failed" (none ok: no manifest; exit 1). A failed source's objects are
deleted at once. On any exception (Ctrl-C included) remote commands are hung
up (their traps restart stopped containers), this run's objects are deleted,
and the lock is released.

Hooks ([hosts.NAME.hooks], `vkbackup.hooks`): before_snapshot runs on the host
once the lock is taken, before anything else touches the host (a failure ends
the run there: exit 1, nothing stopped, uploaded or listed); after_snapshot
runs once the sources have ended and the manifest is written, whatever became
of the run, and a failure makes the result "partial" (`hook_errors`) while the
manifest keeps its status; on_failure runs last, on this machine, for any run
that did not end ok.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vkbackup import __version__, facts, layout, lock
from vkbackup.catalog import list_snapshots, load_manifest, next_snapshot_id
from vkbackup.common import iso, recipients, utcnow
from vkbackup.config.model import Config, HostConfig, SourceConfig
from vkbackup.crypto import EncryptingReader, Recipient
from vkbackup.errors import (
    CryptoError,
    IntegrityError,
    Interrupted,
    SnapshotError,
    UsageError,
    VkError,
)
from vkbackup.hooks import HookRunner
from vkbackup.logs import get_logger
from vkbackup.manifest import Manifest, ObjectRecord, SourceRecord, encode, recipient_set_tag
from vkbackup.progress import CountingReader, Progress
from vkbackup.sources import PlanContext, SourcePlan, StreamPlan, make_source
from vkbackup.sources.base import (
    ZSTD_HERE,
    choose_compressor,
    fingerprint_tag,
    stored_compression,
)
from vkbackup.storage.base import Storage
from vkbackup.streams import BytesReader, HashingReader, Readable
from vkbackup.transport.base import CheckedStdout, Process, Transport
from vkbackup.zstd_compress import ZstdCompressingReader

log = get_logger("snapshot")

Connect = Callable[[HostConfig], Transport]


@dataclass
class SourceResult:
    name: str
    type: str
    status: str = "ok"
    error: str | None = None
    bytes_new: int = 0
    bytes_reused: int = 0
    seconds: float = 0.0
    downtime_seconds: float | None = None
    downtime: dict[str, float] = field(default_factory=dict)  # container -> seconds held
    compressed_on: str | None = None  # "host" | "here": where its new tars were compressed
    objects: list[ObjectRecord] = field(default_factory=list)
    private_objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SnapshotResult:
    host: str
    id: str
    status: str  # complete | partial | failed
    started: str
    finished: str
    seconds: float
    sources: list[SourceResult]
    manifest_key: str | None
    storage: str
    # after_snapshot hooks that failed: the run is partial, the manifest unchanged
    hook_errors: list[str] = field(default_factory=list)

    @property
    def bytes_new(self) -> int:
        return sum(s.bytes_new for s in self.sources)

    @property
    def bytes_reused(self) -> int:
        return sum(s.bytes_reused for s in self.sources)

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "id": self.id,
            "status": self.status,
            "started": self.started,
            "finished": self.finished,
            "seconds": round(self.seconds, 3),
            "bytes_new": self.bytes_new,
            "bytes_reused": self.bytes_reused,
            "manifest": self.manifest_key,
            "storage": self.storage,
            "hook_errors": self.hook_errors,
            "sources": [
                {
                    "name": s.name,
                    "type": s.type,
                    "status": s.status,
                    "error": s.error,
                    "bytes_new": s.bytes_new,
                    "bytes_reused": s.bytes_reused,
                    "seconds": round(s.seconds, 3),
                    "downtime_seconds": s.downtime_seconds,
                    "downtime": s.downtime,
                    "compressed_on": s.compressed_on,
                }
                for s in self.sources
            ],
        }


def plan_snapshot(cfg: Config, host_name: str, only: Sequence[str] = ()) -> list[SourceConfig]:
    """Given a host and the --only names, return the sources a snapshot would take
    (pure; --dry-run prints it). Raise UsageError for an unknown host or source,
    or a host without sources."""
    if host_name not in cfg.hosts:
        known = ", ".join(sorted(cfg.hosts)) or "none"
        raise UsageError(f"no host {host_name!r} in the config (configured: {known})")
    host = cfg.hosts[host_name]
    if not host.sources:
        raise UsageError(f"hosts.{host_name}: no sources configured")
    names = {s.name for s in host.sources}
    unknown = [o for o in only if o not in names]
    if unknown:
        raise UsageError(
            f"--only {unknown[0]!r}: host {host_name} has no such source "
            f"(sources: {', '.join(sorted(names))})"
        )
    return [s for s in host.sources if not only or s.name in only]


def previous_objects(
    storage: Storage, host: str, lookback: int = 10
) -> dict[str, list[ObjectRecord]]:
    """Source name -> its objects (uploaded_in made absolute) in the newest of the
    last *lookback* manifests in which it succeeded (so a --only or partial
    snapshot does not hide the other sources' objects).

    Reuse takes an object only from a manifest that reads clean: with [signing],
    one whose signature checks (`vkbackup.signed_storage`). One that does not
    (unsigned, bad signature, malformed) is skipped with a warning naming it, so
    a forged manifest can neither poison this snapshot nor stop it."""
    out: dict[str, list[ObjectRecord]] = {}
    for h, sid in reversed(list_snapshots(storage, host)[-lookback:]):
        try:
            prev = load_manifest(storage, h, sid)
        except (IntegrityError, CryptoError) as e:
            log.warning("%s: nothing is reused from it: %s", layout.manifest_key(h, sid), e)
            continue
        ok = {s.name for s in prev.sources if s.status == "ok"} - set(out)
        for o in prev.objects:
            if o.source in ok:
                rec = ObjectRecord(**{**o.__dict__, "uploaded_in": prev.origin(o)})
                out.setdefault(o.source, []).append(rec)
    return out


class HoldLocks:
    """One lock per container name, for the sources of one run.

    Sources run in parallel (snapshot.parallel), and two docker-volume sources
    can hold the same container (one with two volumes: `init` writes a source
    per volume, each holding every container that uses it). Run together, one
    would find the container already paused by the other and copy its volume
    while the other unpauses it, or undo the other's pause. So a source takes
    the locks of every container it holds, in sorted order (no two sources wait
    on each other), before its streams start, and gives them back when they
    end: sources that share a container stream one after the other."""

    def __init__(self, cancel: threading.Event) -> None:
        self._cancel = cancel
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextlib.contextmanager
    def holding(self, names: Sequence[str]) -> Iterator[None]:
        with self._guard:
            locks = [self._locks.setdefault(n, threading.Lock()) for n in sorted(set(names))]
        taken: list[threading.Lock] = []
        try:
            for lk in locks:
                while not lk.acquire(timeout=0.2):
                    if self._cancel.is_set():
                        raise SnapshotError("cancelled")
                taken.append(lk)
            yield
        finally:
            for lk in reversed(taken):
                lk.release()


class _Run:
    """State of one snapshot run (shared by the source workers)."""

    def __init__(
        self,
        cfg: Config,
        host: HostConfig,
        storage: Storage,
        connect: Connect,
        snapshot_id: str,
        recips: list[Recipient],
        progress: Progress,
    ) -> None:
        self.cfg = cfg
        self.host = host
        self.storage = storage
        self.connect = connect
        self.id = snapshot_id
        self.recipients = recips
        self.recipient_set = recipient_set_tag(recips)
        self.progress = progress
        self.uploaded: list[str] = []
        self.uploaded_lock = threading.Lock()
        self.cancel = threading.Event()
        self.holds = HoldLocks(self.cancel)
        self.previous: dict[str, list[ObjectRecord]] = {}
        self.active: set[Process] = set()
        self.compressor = "gzip"
        self.idle: list[Transport] = []  # connections finished sources gave back

    def borrow(self) -> Transport:
        """A connection to the host: an idle one a finished source gave back (no new
        handshake), else a new one. At most `parallel` are ever open at once."""
        with self.uploaded_lock:
            if self.idle:
                return self.idle.pop()
        return self.connect(self.host)

    def give_back(self, t: Transport, healthy: bool) -> None:
        """Keep *t* for the next source if the work on it went well, else close it."""
        if healthy and not self.cancel.is_set():
            with self.uploaded_lock:
                self.idle.append(t)
                return
        t.close()

    def close_idle(self) -> None:
        with self.uploaded_lock:
            idle, self.idle = self.idle, []
        for t in idle:
            t.close()

    def kill_all(self) -> None:
        with self.uploaded_lock:
            procs = list(self.active)
        for proc in procs:
            proc.kill()

    def upload(
        self, t: Transport, src: SourceConfig, stream: StreamPlan, mine: list[str]
    ) -> tuple[ObjectRecord, dict[str, Any], str]:
        """Run the stream's command and store its output encrypted. Return the record,
        the private per-object data, and the command's stderr tail."""
        key = layout.object_key(self.host.name, self.id, src.name, stream.name + ".age")
        counter = self.progress.counter(f"{src.name}/{stream.name}")
        if self.cancel.is_set():
            raise SnapshotError("cancelled")
        proc = t.start(stream.argv)
        with self.uploaded_lock:
            self.active.add(proc)
        checked = CheckedStdout(proc)  # EOF only after exit 0: a failed command stores nothing
        out: Readable = CountingReader(checked, counter)
        if stream.compression == ZSTD_HERE:  # the host lacks zstd: compressed here
            out = ZstdCompressingReader(out)
        plain = HashingReader(out)
        cipher = HashingReader(EncryptingReader(plain, self.recipients))
        hint = int(stream.size_hint * 1.01) + 65536 if stream.size_hint else None
        with self.uploaded_lock:
            self.uploaded.append(key)
        mine.append(key)
        try:
            self.storage.put(key, cipher, size_hint=hint)
        except BaseException:
            proc.kill()
            proc.wait(check=False)
            raise
        finally:
            counter.done = True
            with self.uploaded_lock:
                self.active.discard(proc)
        if checked.status is None:  # the storage stopped reading before EOF
            proc.wait(check=True)
        rec = ObjectRecord(
            key=key,
            source=src.name,
            name=stream.name + ".age",
            role=stream.role,
            size=cipher.size,
            sha256=cipher.sha256_hex(),
            compression=stored_compression(stream.compression),
            chain=stream.chain,
            fingerprint=fingerprint_tag(stream.fingerprint) if stream.fingerprint else "",
            recipient_set=self.recipient_set,
        )
        private = {"plain_size": plain.size, "plain_sha256": plain.sha256_hex(), **stream.meta}
        if stream.compression != "none":
            private["compressed_on"] = "here" if stream.compression == ZSTD_HERE else "host"
        return rec, private, proc.stderr_tail()

    def keep_locked(self, rec: ObjectRecord) -> None:
        """With Object Lock, an object this snapshot references must stay locked as
        long as a new one would: extend its retention (never shortened)."""
        until = self.storage.extend_retention(rec.key)
        if until is not None:
            log.debug("%s: retention extended to %s (reused)", rec.key, iso(until))

    def run_source(self, src: SourceConfig) -> SourceResult:
        res = SourceResult(name=src.name, type=src.type)
        t0 = time.monotonic()
        t: Transport | None = None
        mine: list[str] = []
        healthy = False  # set only when the try ran to its end: the connection is reusable
        try:
            if self.cancel.is_set():
                raise SnapshotError("cancelled")
            t = self.borrow()
            source = make_source(src)
            previous = self.previous.get(src.name, [])
            if any(self.storage.head(o.key) is None for o in previous):
                log.warning(
                    "source %s: an object of its previous snapshot is missing from storage: "
                    "nothing is reused, everything is taken again",
                    src.name,
                )
                previous = []
            if any(o.recipient_set != self.recipient_set for o in previous):
                log.info(
                    "source %s: its previous objects are encrypted to other recipients "
                    "(encryption.recipients changed): nothing is reused, everything is "
                    "taken again for the current recipients",
                    src.name,
                )
                previous = []
            ctx = PlanContext(
                snapshot_id=self.id,
                compressor=self.compressor,
                previous=tuple(previous),
                full_every_days=self.cfg.snapshot.full_every_days,
                max_chain=self.cfg.snapshot.max_chain,
                base_every_days=self.cfg.pitr.base_every_days,
            )
            by_tag = {o.fingerprint: o for o in previous if o.fingerprint}
            plan: SourcePlan = source.plan(t, ctx)
            for rec in plan.reuse:
                self.keep_locked(rec)
                res.objects.append(rec)
                res.bytes_reused += rec.size
                res.private_objects[rec.key] = {"reused": True}
            with self.holds.holding(plan.holds if plan.streams else ()):
                for stream in plan.streams:
                    tag = fingerprint_tag(stream.fingerprint) if stream.fingerprint else None
                    prev = by_tag.get(tag) if tag else None
                    if prev is not None:
                        rec = ObjectRecord(**{**prev.__dict__, "source": src.name})
                        self.keep_locked(rec)
                        res.objects.append(rec)
                        res.bytes_reused += rec.size
                        res.private_objects[rec.key] = {"reused": True, **stream.meta}
                        log.debug("%s/%s unchanged: reusing %s", src.name, stream.name, rec.key)
                        continue
                    rec, private, tail = self.upload(t, src, stream, mine)
                    source.after_stream(t, stream, plan, tail)
                    res.objects.append(rec)
                    res.private_objects[rec.key] = private
                    res.compressed_on = private.get("compressed_on", res.compressed_on)
                    res.bytes_new += rec.size
            res.meta = plan.meta
            res.downtime_seconds = plan.meta.get("downtime_seconds")
            res.downtime = dict(plan.meta.get("downtime") or {})
            healthy = True
        except VkError as e:
            res.status = "failed"
            res.error = str(e)
            res.objects = []
            res.bytes_new = res.bytes_reused = 0
            _cleanup(self.storage, mine)
            log.error("source %s failed: %s", src.name, e)
        finally:
            res.seconds = time.monotonic() - t0
            if t is not None:
                self.give_back(t, healthy)
        return res


def run_problem(result: SnapshotResult) -> str | None:
    """Given a run's result, return what went wrong (for on_failure), or None when
    it ended ok (a --only snapshot that skipped sources but lost none is ok)."""
    problems = [f"source {s.name}: {s.error or s.status}" for s in result.sources if s.error]
    problems += result.hook_errors
    if result.status == "failed" and not problems:
        problems.append("no source could be saved")
    return "; ".join(problems) if problems else None


def run_snapshot(
    cfg: Config,
    host_name: str,
    *,
    storage: Storage,
    connect: Connect,
    only: Sequence[str] = (),
    break_lock: bool = False,
    progress: Progress | None = None,
) -> SnapshotResult:
    """Take one snapshot of *host_name* (see the module docstring) and return its
    result; a failed or partial snapshot is a result, not an exception. Raise
    LockError if another snapshot of the host runs, UsageError as plan_snapshot,
    SnapshotError if compression = "gzip" and the host has no gzip, HookError
    if a before_snapshot hook fails. The host's on_failure hooks run for every
    run that does not end ok, raised errors included."""
    sources = plan_snapshot(cfg, host_name, only)
    host = cfg.hosts[host_name]
    drop = (host.key_passphrase_env,) if host.key_passphrase_env else ()
    hooks = HookRunner(host_name, host.hooks, "snapshot", drop_env=drop)
    try:
        result = _take(
            cfg,
            host,
            sources,
            storage,
            connect,
            hooks,
            break_lock,
            progress or Progress(enabled=False),
        )
    except (Exception, KeyboardInterrupt) as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt | Interrupted) else "failed"
        hooks.on_failure(status, str(e) or type(e).__name__)
        raise
    problem = run_problem(result)
    if problem is not None:
        status = "failed" if result.status == "failed" else "partial"
        hooks.on_failure(status, problem, snapshot=result.id if result.manifest_key else None)
    return result


def _take(
    cfg: Config,
    host: HostConfig,
    sources: list[SourceConfig],
    storage: Storage,
    connect: Connect,
    hooks: HookRunner,
    break_lock: bool,
    progress: Progress,
) -> SnapshotResult:
    """The body of run_snapshot: lock, before hooks, sources, manifest, after hooks
    (on_failure is run_snapshot's, around this)."""
    host_name = host.name
    recips = recipients(cfg)
    t_start = time.monotonic()
    # ids have 1 s resolution and sort after every earlier one; the wait is bounded
    snapshot_id, started = next_snapshot_id(storage, host_name)
    run = _Run(cfg, host, storage, connect, snapshot_id, recips, progress)
    held = lock.acquire(storage, host_name, snapshot_id, break_lock=break_lock)
    committed = False
    hooks_passed = False  # every before_snapshot hook ran ok: the after hooks will run
    result: SnapshotResult | None = None
    try:
        t = run.borrow()
        gathered = False
        try:
            hooks.before(t)
            hooks_passed = True
            host_facts = facts.gather(t)
            gathered = True
        finally:
            run.give_back(t, gathered)
        compressor = choose_compressor(cfg.snapshot.compression, host_facts.get("tools", []))
        if compressor is None:
            raise SnapshotError(
                f"{host_name}: snapshot.compression = {cfg.snapshot.compression!r} but "
                f"{cfg.snapshot.compression} is not installed on {host.address}",
                hint=f"install it there (apt-get install {cfg.snapshot.compression}) "
                'or set snapshot.compression = "auto"',
            )
        run.compressor = compressor
        if compressor == ZSTD_HERE:
            # "zstd" set on purpose (a slow or metered link?) deserves a warning: the
            # link now carries the uncompressed tar, 1.4-3x the bytes
            (log.warning if cfg.snapshot.compression == "zstd" else log.info)(
                "%s has no zstd: tars cross the link uncompressed and are compressed "
                "with zstd here (install zstd there to compress on the host)",
                host_name,
            )
        run.previous = previous_objects(storage, host_name)
        log.info(
            "snapshot %s of %s: %d sources -> %s",
            snapshot_id,
            host_name,
            len(sources),
            storage.describe(),
        )
        progress.start()
        try:
            with ThreadPoolExecutor(max_workers=cfg.snapshot.parallel) as pool:
                futures = [pool.submit(run.run_source, s) for s in sources]
                try:
                    results = [f.result() for f in futures]
                except BaseException:
                    # Ctrl-C/SIGTERM: hang up every remote command (their traps start
                    # stopped containers again), so the workers end now, not at EOF
                    run.cancel.set()
                    pool.shutdown(wait=False, cancel_futures=True)
                    run.kill_all()
                    raise
        finally:
            progress.stop()
        finished = utcnow()
        ok = [r for r in results if r.status == "ok"]
        # --only: the sources not taken are recorded as skipped, and a snapshot
        # without every configured source is never "complete" (restore latest
        # and prune's rules only count complete ones).
        taken = {s.name for s in sources}
        skipped = [
            SourceResult(name=s.name, type=s.type, status="skipped")
            for s in host.sources
            if s.name not in taken
        ]
        if len(ok) == len(results) and not skipped:
            status = "complete"
        else:
            status = "partial" if ok else "failed"
        results_all = results + skipped
        manifest_key: str | None = None
        if ok:
            manifest = Manifest(
                id=snapshot_id,
                host=host_name,
                started=iso(started),
                finished=iso(finished),
                tool_version=__version__,
                status=status,
                objects=[o for r in ok for o in r.objects],
                sources=[
                    SourceRecord(
                        name=r.name,
                        type=r.type,
                        status=r.status,
                        bytes_new=r.bytes_new,
                        bytes_reused=r.bytes_reused,
                        seconds=round(r.seconds, 3),
                    )
                    for r in results_all
                ],
                private={
                    "facts": host_facts,
                    "host": {"address": host.address, "port": host.port, "user": host.user},
                    "sources": {
                        r.name: {
                            "type": r.type,
                            "meta": r.meta,
                            "error": r.error,
                            "downtime_seconds": r.downtime_seconds,
                            "downtime": r.downtime,
                            "config": _source_config_doc(
                                next(s for s in sources if s.name == r.name)
                            ),
                        }
                        for r in results
                    },
                    "objects": {k: v for r in ok for k, v in r.private_objects.items()},
                },
            )
            manifest_key = layout.manifest_key(host_name, snapshot_id)
            storage.put(manifest_key, BytesReader(encode(manifest, recips)), if_absent=True)
            committed = True
        result = SnapshotResult(
            host=host_name,
            id=snapshot_id,
            status=status,
            started=iso(started),
            finished=iso(finished),
            seconds=time.monotonic() - t_start,
            sources=results,
            manifest_key=manifest_key,
            storage=storage.describe(),
        )
    finally:
        try:
            if hooks_passed and hooks.has_after:
                errors = hooks.after_on(run.borrow)
                if errors and result is not None:
                    result.hook_errors = errors
                    if result.status == "complete":
                        result.status = "partial"  # the run, not the manifest: see module doc
        finally:  # a second Ctrl-C during the after hooks still releases the lock
            run.close_idle()
            if not committed:
                _cleanup(storage, run.uploaded)
            try:
                lock.release(storage, host_name, held)
            except VkError as e:
                log.warning("could not release the lock of %s: %s", host_name, e)
    assert result is not None
    return result


CONFIG_KEYS = {
    "postgres": ("container", "database", "user", "compress_level", "globals"),
    "files": ("paths", "secret"),
    "docker-volume": ("volume", "stop", "quiesce", "stop_timeout"),
    "docker-image": ("images",),
    "host": ("paths", "data_dirs", "restart"),
}


def _source_config_doc(s: SourceConfig) -> dict[str, Any]:
    """The source's config as recorded in the private part (only its type's keys)."""
    doc: dict[str, Any] = {"name": s.name, "type": s.type}
    for k in CONFIG_KEYS.get(s.type, ()):
        v = getattr(s, k)
        if v is not None:
            doc[k] = list(v) if isinstance(v, tuple) else v
    return doc


def _cleanup(storage: Storage, keys: list[str]) -> None:
    for key in keys:
        try:
            storage.delete(key)
        except VkError as e:  # pragma: no cover - best effort; prune removes leftovers
            log.warning("could not delete leftover %s: %s", key, e)
