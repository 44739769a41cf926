"""Finding and reading snapshots in storage (manifests only; no data objects).

A snapshot is listed when its manifest exists; manifests are read whole but
never past MANIFEST_LIMIT, and a manifest that does not name the host and id
of its own key is refused.
"""

from __future__ import annotations

from vkbackup import layout
from vkbackup.errors import IntegrityError, ObjectNotFoundError, UsageError
from vkbackup.manifest import Manifest, decode
from vkbackup.storage.base import Storage

MANIFEST_LIMIT = 64 * 1024 * 1024


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


def list_snapshots(storage: Storage, host: str | None = None) -> list[tuple[str, str]]:
    """Return the (host, id) of every manifest in storage (or of *host*), oldest first."""
    out: list[tuple[str, str]] = []
    for info in storage.list(layout.manifests_prefix(host)):
        parsed = layout.parse_manifest_key(info.key)
        if parsed is not None and (host is None or parsed[0] == host):
            out.append(parsed)
    out.sort(key=lambda hs: (hs[1], hs[0]))
    return out


def load_manifest(storage: Storage, host: str, snapshot_id: str) -> Manifest:
    """Given a host and snapshot id, return its decoded manifest (private part
    sealed). Raise ObjectNotFoundError if it is missing, IntegrityError if it is
    too large, malformed, or names another host or id."""
    key = layout.manifest_key(host, snapshot_id)
    m = decode(read_small(storage, key), key)
    if m.host != host or m.id != snapshot_id:
        raise IntegrityError(
            f"{key}: manifest says host {m.host!r} id {m.id!r}: it was moved or swapped"
        )
    return m


def load_all(storage: Storage, host: str | None = None) -> list[Manifest]:
    """Return every manifest (of *host*), oldest first; a bad one raises, none is skipped."""
    return [load_manifest(storage, h, s) for h, s in list_snapshots(storage, host)]


def resolve(storage: Storage, ref: str, host: str | None = None) -> Manifest:
    """Given "latest" (the newest complete snapshot), an id or a unique id prefix,
    return that snapshot's manifest. Raise ObjectNotFoundError if nothing
    matches, UsageError naming the candidates if *ref* is ambiguous ("latest"
    across several hosts included)."""
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
        raise ObjectNotFoundError(f"{storage.describe()}: no snapshot {ref!r}{where}")
    if len(matches) > 1:
        raise UsageError(
            f"snapshot {ref!r} is ambiguous: " + ", ".join(f"{h}/{s}" for h, s in matches[:5])
        )
    h, s = matches[0]
    return load_manifest(storage, h, s)
