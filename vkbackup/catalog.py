"""Finding and reading snapshots in storage (manifests only; no data objects).

A snapshot is listed when its manifest exists; manifests are read whole but
never past MANIFEST_LIMIT, and a manifest that does not name the host and id
of its own key is refused.

Dates come from whoever wrote to the bucket. A manifest whose id is dated
more than `layout.FUTURE_TOLERANCE` ahead of the clock is not listed (a
warning names it, once per process), so `latest`, prune and the next
snapshot's id never follow it; asked for by its id, it is refused, naming
it, and so is a manifest whose recorded times are that far ahead. A new
snapshot waits at most CLOCK_WAIT seconds for the clock to pass the newest
id (`next_snapshot_id`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from vkbackup import layout
from vkbackup.errors import IntegrityError, ObjectNotFoundError, UsageError
from vkbackup.logs import get_logger
from vkbackup.manifest import Manifest, decode
from vkbackup.storage.base import Storage

log = get_logger("catalog")

MANIFEST_LIMIT = 64 * 1024 * 1024
#: the longest a new snapshot waits for the clock to pass the newest listed id
CLOCK_WAIT = 3.0

_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_future_once(note: str) -> None:
    """Log *note* (a future_dated text) as a warning, once per process: the
    same listing is read several times by one command."""
    with _warned_lock:
        if note in _warned:
            return
        _warned.add(note)
    log.warning("%s: ignored", note)


def read_small(storage: Storage, key: str, limit: int = MANIFEST_LIMIT) -> bytes:
    """Read a whole (small) object; raise IntegrityError if it is larger than *limit*."""
    stream = storage.open(key)
    try:
        parts: list[bytes] = []
        total = 0
        while True:
            chunk = stream.read(1024 * 1024)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise IntegrityError(f"{key}: larger than {limit} bytes; refusing to load it")
            parts.append(chunk)
        return b"".join(parts)
    finally:
        stream.close()


def _scan(
    storage: Storage, host: str | None, now: datetime | None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Return the (host, id) of every manifest, oldest first, split in two:
    those dated at most FUTURE_TOLERANCE ahead of *now*, and the others."""
    listed: list[tuple[str, str]] = []
    future: list[tuple[str, str]] = []
    for info in storage.list(layout.manifests_prefix(host)):
        parsed = layout.parse_manifest_key(info.key)
        if parsed is None or (host is not None and parsed[0] != host):
            continue
        try:
            ahead = layout.is_future(layout.snapshot_time(parsed[1]), now)
        except ValueError:  # matches ID_RE but names no date (month 13)
            continue
        (future if ahead else listed).append(parsed)
    listed.sort(key=lambda hs: (hs[1], hs[0]))
    future.sort(key=lambda hs: (hs[1], hs[0]))
    return listed, future


def _future_note(host: str, snapshot_id: str) -> str:
    key = layout.manifest_key(host, snapshot_id)
    return layout.future_dated(key, layout.snapshot_time(snapshot_id))


def list_snapshots(
    storage: Storage, host: str | None = None, *, now: datetime | None = None
) -> list[tuple[str, str]]:
    """Return the (host, id) of every manifest in storage (or of *host*), oldest
    first. One dated more than FUTURE_TOLERANCE after *now* (default: the
    clock) is left out, and named in a warning."""
    listed, future = _scan(storage, host, now)
    for h, sid in future:
        warn_future_once(_future_note(h, sid))
    return listed


def future_snapshots(
    storage: Storage, host: str | None = None, *, now: datetime | None = None
) -> list[tuple[str, str]]:
    """Return the (host, id) of the manifests list_snapshots leaves out as
    dated in the future, oldest first."""
    return _scan(storage, host, now)[1]


def _refuse_future(key: str, text: str, now: datetime | None) -> None:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return  # not a date: the manifest's own checks judge it
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    if layout.is_future(t, now):
        raise IntegrityError(layout.future_dated(key, t) + ": refused")


def load_manifest(
    storage: Storage, host: str, snapshot_id: str, *, now: datetime | None = None
) -> Manifest:
    """Given a host and snapshot id, return its decoded manifest (private part
    sealed). Raise ObjectNotFoundError if it is missing, IntegrityError if it is
    too large, malformed, names another host or id, or if its id or the times
    it records are more than FUTURE_TOLERANCE after *now* (default: the clock)."""
    key = layout.manifest_key(host, snapshot_id)
    if layout.ID_RE.match(snapshot_id):
        _refuse_future(key, layout.snapshot_time(snapshot_id).isoformat(), now)
    return decode_manifest(read_small(storage, key), host, snapshot_id, now=now)


def decode_manifest(
    data: bytes, host: str, snapshot_id: str, *, now: datetime | None = None
) -> Manifest:
    """Given the bytes of the manifest of *host*'s *snapshot_id* (already read,
    e.g. to copy them as they are), return it decoded, checked as load_manifest
    checks it. Raise IntegrityError as load_manifest does."""
    key = layout.manifest_key(host, snapshot_id)
    if layout.ID_RE.match(snapshot_id):
        _refuse_future(key, layout.snapshot_time(snapshot_id).isoformat(), now)
    m = decode(data, key)
    if m.host != host or m.id != snapshot_id:
        raise IntegrityError(
            f"{key}: manifest says host {m.host!r} id {m.id!r}: it was moved or swapped"
        )
    _refuse_future(key, m.started, now)
    _refuse_future(key, m.finished, now)
    return m


def load_all(storage: Storage, host: str | None = None) -> list[Manifest]:
    """Return every manifest (of *host*), oldest first; a bad one raises, none is skipped."""
    return [load_manifest(storage, h, s) for h, s in list_snapshots(storage, host)]


def resolve(storage: Storage, ref: str, host: str | None = None) -> Manifest:
    """Given "latest" (the newest complete snapshot), an id or a unique id prefix,
    return that snapshot's manifest. "latest" never follows an id dated in the
    future. Raise ObjectNotFoundError if nothing matches, IntegrityError naming
    the manifest if *ref* is only a future-dated one, UsageError naming the
    candidates if *ref* is ambiguous ("latest" across several hosts included)."""
    snaps = list_snapshots(storage, host)
    where = f" of host {host!r}" if host else ""
    if ref == "latest":
        for h, sid in reversed(snaps):
            m = load_manifest(storage, h, sid)
            if m.status == "complete":
                if host is None and len({h for h, _ in snaps}) > 1:
                    hosts = sorted({h for h, _ in snaps})
                    raise UsageError(
                        f"'latest' is ambiguous: snapshots of several hosts ({', '.join(hosts)})",
                        hint="name the host (--host) or the snapshot id",
                    )
                return m
        raise ObjectNotFoundError(f"{storage.describe()}: no complete snapshot{where}")
    matches = [(h, s) for h, s in snaps if s == ref or s.startswith(ref)]
    exact = [(h, s) for h, s in matches if s == ref]
    if exact:
        matches = exact
    if not matches:
        ahead = [(h, s) for h, s in future_snapshots(storage, host) if s.startswith(ref)]
        if ahead:
            raise IntegrityError(
                "; ".join(_future_note(h, s) for h, s in ahead[:5]) + ": refused",
                hint="a clock far ahead wrote it, or someone who can write to the bucket; "
                "check that machine's clock, then delete the manifest or wait for its date",
            )
        raise ObjectNotFoundError(f"{storage.describe()}: no snapshot {ref!r}{where}")
    if len(matches) > 1:
        raise UsageError(
            f"snapshot {ref!r} is ambiguous: " + ", ".join(f"{h}/{s}" for h, s in matches[:5])
        )
    h, s = matches[0]
    return load_manifest(storage, h, s)


def next_snapshot_id(
    storage: Storage,
    host: str,
    *,
    clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_wait: float = CLOCK_WAIT,
) -> tuple[str, datetime]:
    """Return a new snapshot id of *host* that sorts after every listed one, and
    the time the snapshot starts.

    Ids have one-second resolution, so a snapshot right after another waits for
    the clock to tick past the newest id, but never more than *max_wait*
    seconds: an id up to FUTURE_TOLERANCE ahead (another machine's clock) is
    passed by taking the second after it, with a warning, instead of waiting
    for it; one further ahead is not listed at all. The start time returned is
    always the clock's.
    """
    now_of = clock or (lambda: datetime.now(UTC))
    listed = list_snapshots(storage, host)
    newest = listed[-1][1][:16] if listed else ""
    waited = 0.0
    started = now_of()
    while newest and layout.new_snapshot_id(started)[:16] <= newest:
        if waited >= max_wait:
            after = layout.snapshot_time(newest) + timedelta(seconds=1)
            log.warning(
                "%s: dated %s, ahead of this machine's clock (%s): the new snapshot is "
                "named after it instead of waiting; check both machines' clocks",
                layout.manifest_key(host, listed[-1][1]),
                layout.snapshot_time(newest).strftime("%Y-%m-%dT%H:%M:%SZ"),
                started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            return layout.new_snapshot_id(after), started
        sleep(0.25)
        waited += 0.25
        started = now_of()
    return layout.new_snapshot_id(started), started
