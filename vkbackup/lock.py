"""One snapshot per host at a time: a lock object in the storage itself.

The lock is `locks/<host>.lock`, created with a conditional put (S3
If-None-Match / local O_EXCL), holding owner, pid, host, time and snapshot id.
A second run finds it and refuses, naming the holder: LockHeldError (exit 11,
"try again later"). A lock is *stale* when its owner process on this machine
is gone, or it is older than STALE_AFTER; a stale lock is reported with its
age and taken over only with --break-lock. A stale lock is a LockError (exit
1), not exit 11: waiting will not clear it, an operator must look.

A lock is released only by the run that wrote it: release() deletes it only
when it still says exactly what that run wrote (owner, machine, pid, time and
snapshot id), so a run whose lock was broken and taken by another run, on this
machine or another one with the same pid, leaves the new holder's lock alone.
`process_gone` tells a lock whose process is proven gone (same machine, no such
pid) from one merely old; `take_over` replaces one given lock and no other.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from vkbackup import layout
from vkbackup.catalog import read_small
from vkbackup.errors import LockError, LockHeldError, ObjectExistsError, ObjectNotFoundError
from vkbackup.logs import get_logger
from vkbackup.storage.base import Storage
from vkbackup.streams import BytesReader

log = get_logger("lock")
STALE_AFTER = timedelta(hours=12)


@dataclass(frozen=True)
class LockInfo:
    owner: str  # user@machine of the vkbackup process
    machine: str
    pid: int
    host: str  # the backed-up host
    time: str  # ISO 8601 UTC
    snapshot_id: str


def _age(info: LockInfo, now: datetime) -> timedelta:
    try:
        return now - datetime.fromisoformat(info.time)
    except ValueError:
        return timedelta(0)


def process_gone(info: LockInfo) -> bool:
    """Given a lock, return True only when it was taken on this machine and its
    process is proven gone (no process has its pid). A lock of another machine,
    or whose pid is alive (or belongs to another user), is not."""
    if info.machine != socket.gethostname() or info.pid <= 0:
        return False
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: a process of another user has that pid
        return False
    return False


def is_stale(info: LockInfo, now: datetime) -> bool:
    """Given a lock, return True if its process on this machine is gone or it is
    older than STALE_AFTER (its process may still be alive then: see
    process_gone)."""
    return process_gone(info) or _age(info, now) > STALE_AFTER


def describe(info: LockInfo, now: datetime) -> str:
    """Given a lock, return who holds it, for which snapshot, since when and how long ago."""
    age = _age(info, now)
    mins = int(age.total_seconds() // 60)
    return (
        f"held by {info.owner} (pid {info.pid}) for snapshot {info.snapshot_id}, "
        f"since {info.time} ({mins // 60}h{mins % 60:02d}m ago)"
    )


def holder(storage: Storage, host: str) -> LockInfo | None:
    """Return what the host's lock says (None: nobody holds it)."""
    return _read(storage, layout.lock_key(host))


def _read(storage: Storage, key: str) -> LockInfo | None:
    try:
        doc = json.loads(read_small(storage, key, 65536))
        return LockInfo(**doc)
    except ObjectNotFoundError:
        return None
    except (ValueError, TypeError):
        return LockInfo("unknown", "unknown", 0, "?", "1970-01-01T00:00:00+00:00", "?")


def acquire(
    storage: Storage,
    host: str,
    snapshot_id: str,
    *,
    break_lock: bool = False,
    now: datetime | None = None,
) -> LockInfo:
    """Take the host's lock and return what was written into it.

    Raise LockHeldError naming who holds it if another live run has it,
    LockError if a stale lock is in the way. With *break_lock*, a
    held lock (stale or not) is deleted once and taking it is tried again.
    *now* (default: the current time) is the lock's time and the reference
    for its holder's age.
    """
    now = now or datetime.now(UTC)
    machine = socket.gethostname()
    user = os.environ.get("USER") or str(os.getuid())
    info = LockInfo(
        owner=f"{user}@{machine}",
        machine=machine,
        pid=os.getpid(),
        host=host,
        time=now.isoformat(),
        snapshot_id=snapshot_id,
    )
    key = layout.lock_key(host)
    body = json.dumps(asdict(info)).encode()
    for attempt in (1, 2):
        try:
            storage.put(key, BytesReader(body), if_absent=True)
            return info
        except ObjectExistsError:
            held = _read(storage, key)
            if held is None:
                continue  # released meanwhile: try again
            what = describe(held, now)
            stale = is_stale(held, now)
            if break_lock and attempt == 1:
                log.warning("breaking %slock of host %s: %s", "stale " if stale else "", host, what)
                storage.delete(key)
                continue
            if stale:
                raise LockError(
                    f"host {host}: a stale lock remains in {storage.describe()}/{key}: {what}",
                    hint="make sure no other vkbackup runs for this host, then add --break-lock",
                ) from None
            raise LockHeldError(
                f"host {host}: another snapshot is running: {what}",
                hint="wait for it to finish; if it crashed, --break-lock takes the lock over",
            ) from None
    raise LockError(f"host {host}: could not take the lock {key}")


def take_over(
    storage: Storage,
    host: str,
    snapshot_id: str,
    expected: LockInfo,
    *,
    now: datetime | None = None,
) -> LockInfo:
    """Delete the host's lock if it still is *expected* (what the caller read and
    judged), then take the lock as acquire() does, without --break-lock: when
    another run took it over meanwhile, that run's lock is left alone and this
    raises LockHeldError (or LockError) naming it."""
    key = layout.lock_key(host)
    if _read(storage, key) == expected:
        storage.delete(key)
    return acquire(storage, host, snapshot_id, now=now)


def release(storage: Storage, host: str, info: LockInfo) -> None:
    """Delete the host's lock only if it is still ours: exactly what *info* says
    (owner, machine, pid, host, time, snapshot id), so a lock another run (of this
    machine or another one, whatever its pid) took over is never deleted."""
    key = layout.lock_key(host)
    held = _read(storage, key)
    if held is not None and held == info:
        storage.delete(key)
    elif held is not None:
        log.warning(
            "host %s: the lock is no longer ours (%s): left in place",
            host,
            describe(held, datetime.now(UTC)),
        )
