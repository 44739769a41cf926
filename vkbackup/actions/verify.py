"""`vkbackup verify`: read every object of a snapshot back and prove it is intact.

For each object in the manifest, the object is streamed from storage (bounded
memory), its bytes counted and hashed against the manifest's size and sha256,
and, unless in light mode, decrypted to the end so age authenticates every
chunk. The manifest's own private part is decrypted too. Light mode
(``identities=None``, the CLI's ``--no-decrypt``) needs only the public part:
size and sha256. Each bad object is named with what is wrong with it:

    missing   the key is not in storage
    size      its byte count differs from the manifest (truncated, or extended)
    sha256    same size, other content (a flipped bit, an overwrite)
    swapped   its content is another object's, found by hash in the manifests read
    age       size and sha256 match the manifest, yet age refuses it (wrong key,
              or a manifest forged to match damaged data)
    read      storage failed while reading it
    manifest  the manifest itself cannot be read, or its private part not opened
    chain     the manifest's incremental chain of a source has a gap
    wal       point-in-time recovery: the streamed WAL from the snapshot's base
              backup on has a gap, stops before the backup is consistent, lacks
              a timeline's history file, or a WAL object is bad (with the key;
              checked with identities only: the base backup's start is private)
    deep      `verify --deep`: the dump does not restore whole into a throwaway
              server (PostgreSQL sources only)

The result of each snapshot is recorded in storage at ``verify/<host>/<id>.json``
(``list`` shows it as "last verified"). An object shared by several snapshots
(``uploaded_in`` an earlier one) is read once per run. Reading records back
is `vkbackup.verify_records`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vkbackup import __version__, catalog, layout
from vkbackup.common import iso, utcnow
from vkbackup.config.model import HostConfig
from vkbackup.crypto import DecryptingReader, Identity
from vkbackup.errors import (
    CryptoError,
    IntegrityError,
    ObjectNotFoundError,
    StorageError,
    UsageError,
    VkError,
    WrongKeyError,
)
from vkbackup.logs import get_logger
from vkbackup.manifest import Manifest, ObjectRecord, objects_by_source, open_private
from vkbackup.restore.records import read_private
from vkbackup.sources import postgres
from vkbackup.storage.base import Storage
from vkbackup.streams import CHUNK, BytesReader, HashingReader
from vkbackup.transport.base import Transport
from vkbackup.verify_records import (
    MODE_FULL,
    MODE_LIGHT,
    RECORD_FORMAT,
    record_key,
)

log = get_logger("verify")


@dataclass(frozen=True)
class BadObject:
    key: str  # the object (or manifest) at fault
    source: str  # its source ("" for the manifest)
    problem: str  # missing | size | sha256 | swapped | age | read | manifest | chain | deep
    detail: str  # a sentence naming the key and what is wrong

    def to_json(self) -> dict[str, str]:
        return {
            "key": self.key,
            "source": self.source,
            "problem": self.problem,
            "detail": self.detail,
        }


#: The `verify --deep` hook: given a snapshot whose objects all passed, restore what
#: needs restoring somewhere safe and return what is wrong (empty: all good).
DeepCheck = Callable[[Manifest, Storage, Sequence[Identity]], list[BadObject]]


@dataclass
class SnapshotVerify:
    """One snapshot's verify result; `to_json` is also the record stored for it."""

    host: str
    id: str
    time: str  # ISO 8601 UTC, when the check ended
    mode: str  # "full" | "no-decrypt"
    objects: int = 0  # objects in the manifest
    bytes: int = 0  # bytes read from storage in this snapshot's checks
    shared: int = 0  # objects already checked earlier in this run
    bad: list[BadObject] = field(default_factory=list)
    seconds: float = 0.0
    deep: bool = False

    @property
    def ok(self) -> bool:
        return not self.bad

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "host": self.host,
            "id": self.id,
            "time": self.time,
            "ok": self.ok,
            "mode": self.mode,
            "deep": self.deep,
            "objects": self.objects,
            "bytes": self.bytes,
            "shared": self.shared,
            "seconds": round(self.seconds, 3),
            "bad": [b.to_json() for b in self.bad],
            "tool_version": __version__,
        }

    def summary(self) -> str:
        verdict = "ok" if self.ok else f"BAD ({len(self.bad)} bad)"
        shared = f", {self.shared} shared checked earlier in this run" if self.shared else ""
        return (
            f"{self.host}/{self.id}: {verdict}: {self.objects} objects, "
            f"{self.bytes} bytes read{shared} ({self.mode}, {self.seconds:.1f}s)"
        )


# -- records ---------------------------------------------------------------------


def write_record(storage: Storage, result: SnapshotVerify) -> None:
    """Store *result* at verify/<host>/<id>.json (replacing the previous record)."""
    body = json.dumps(result.to_json(), indent=1, sort_keys=True).encode()
    storage.put(record_key(result.host, result.id), BytesReader(body))


# -- selection --------------------------------------------------------------------


def select_snapshots(
    storage: Storage,
    ref: str | None = None,
    *,
    latest: bool = False,
    all_: bool = False,
    host: str | None = None,
) -> list[tuple[str, str]]:
    """Given SNAPSHOT, --latest or --all (none: --latest), return the (host, id)
    pairs to verify, oldest first. --latest without --host means the newest
    complete snapshot of every host. Raise UsageError on contradictory options,
    ObjectNotFoundError if nothing matches."""
    if sum((ref is not None, latest, all_)) > 1:
        raise UsageError("give one of SNAPSHOT, --latest or --all")
    if ref is not None and ref != "latest":
        m = catalog.resolve(storage, ref, host)
        return [(m.host, m.id)]
    snaps = catalog.list_snapshots(storage, host)
    where = f" of host {host!r}" if host else ""
    if not snaps:
        raise ObjectNotFoundError(f"{storage.describe()}: no snapshot{where} to verify")
    if all_:
        return snaps
    out: list[tuple[str, str]] = []
    for h in sorted({h for h, _ in snaps}):
        m = catalog.resolve(storage, "latest", h)
        out.append((m.host, m.id))
    return sorted(out, key=lambda hs: (hs[1], hs[0]))


# -- checks ------------------------------------------------------------------------


def _drain(src: Any) -> None:
    while src.read(CHUNK):
        pass


def check_object(
    storage: Storage,
    obj: ObjectRecord,
    identities: Sequence[Identity] | None,
    *,
    known: dict[str, str] | None = None,
) -> tuple[BadObject | None, int]:
    """Given an object record, read the object back (and decrypt it when
    *identities* are given). Return (the problem or None, bytes read).
    *known* maps ciphertext sha256 to the key of the object that has it."""
    try:
        raw = storage.open(obj.key)
    except ObjectNotFoundError:
        return (
            BadObject(
                obj.key,
                obj.source,
                "missing",
                f"{obj.key}: missing from storage (source {obj.source}, {obj.size} bytes expected)",
            ),
            0,
        )
    except StorageError as e:
        return BadObject(obj.key, obj.source, "read", f"{obj.key}: cannot open: {e}"), 0
    hasher = HashingReader(raw)
    age_error: CryptoError | None = None
    try:
        with raw:
            if identities:
                try:
                    _drain(DecryptingReader(hasher, identities, name=obj.key))
                except CryptoError as e:
                    age_error = e
            _drain(hasher)  # the rest, so size and sha256 cover every byte stored
    except (StorageError, OSError) as e:
        return (
            BadObject(
                obj.key,
                obj.source,
                "read",
                f"{obj.key}: read failed after {hasher.size} bytes: {e}",
            ),
            hasher.size,
        )
    size, sha = hasher.size, hasher.sha256_hex()
    also = f"; age: {age_error}" if age_error is not None else ""
    if sha != obj.sha256 and known and known.get(sha, obj.key) != obj.key:
        return (
            BadObject(
                obj.key,
                obj.source,
                "swapped",
                f"{obj.key}: holds the content of {known[sha]} ({size} bytes), not the object "
                f"the manifest records ({obj.size} bytes, sha256 {obj.sha256[:16]}...): "
                "it was swapped or overwritten",
            ),
            size,
        )
    if size != obj.size:
        how = "truncated" if size < obj.size else "longer than recorded"
        return (
            BadObject(
                obj.key,
                obj.source,
                "size",
                f"{obj.key}: {how}: {size} bytes in storage, the manifest records {obj.size}"
                + also,
            ),
            size,
        )
    if sha != obj.sha256:
        return (
            BadObject(
                obj.key,
                obj.source,
                "sha256",
                f"{obj.key}: content differs from the manifest (sha256 {sha[:16]}..., "
                f"recorded {obj.sha256[:16]}...): damaged in storage" + also,
            ),
            size,
        )
    if age_error is not None:
        return (
            BadObject(
                obj.key,
                obj.source,
                "age",
                f"{obj.key}: size and sha256 match the manifest but age refuses it: {age_error}",
            ),
            size,
        )
    return None, size


def chain_problems(manifest: Manifest) -> list[BadObject]:
    """Given a manifest, name every source whose incremental chain has a gap
    (positions must run 0 (the full), 1, 2, ... without a hole)."""
    key = layout.manifest_key(manifest.host, manifest.id)
    out: list[BadObject] = []
    for source, objs in sorted(objects_by_source(manifest).items()):
        positions = sorted({o.chain for o in objs})
        if not positions or positions == [0]:
            continue
        missing = sorted(set(range(positions[-1] + 1)) - set(positions))
        if missing:
            out.append(
                BadObject(
                    key,
                    source,
                    "chain",
                    f"{key}: source {source}: the incremental chain is broken: no object at "
                    f"position{'s' if len(missing) > 1 else ''} "
                    + ", ".join(str(m) for m in missing)
                    + " (0 is the full)",
                )
            )
    return out


def wal_problems(
    storage: Storage,
    manifest: Manifest,
    identities: Sequence[Identity],
    res: SnapshotVerify,
    cache: dict[tuple[str, int, str], BadObject | None] | None,
    known: dict[str, str] | None,
) -> list[BadObject]:
    """The streamed WAL a restore of *manifest*'s base backup to any later time needs
    (point-in-time recovery): the chain from the base backup's start must reach at
    least its end (consistency), have no missing segment before its last, carry the
    history file of a timeline after the first, and every WAL object in it must read
    back whole (size, sha256 and, with identities, age)."""
    from vkbackup.pitr import recover
    from vkbackup.pitr import wal as pitr_wal

    out: list[BadObject] = []
    private = read_private(manifest, identities)
    for name, entry in sorted(private.sources.items()):
        meta = entry.meta
        if not isinstance(meta, postgres.Meta) or not any(
            o.role == "pg-base" and o.source == name for o in manifest.objects
        ):
            continue
        where = f"wal/{manifest.host}/ (source {name})"
        try:
            found = recover.base_in(storage, manifest, name, identities)
        except VkError as e:
            out.append(BadObject(where, name, "wal", f"{where}: the base backup: {e}"))
            continue
        if found is None:
            continue
        base = found.facts
        records, unreadable = recover.wal_records(storage, manifest.host)
        for text in unreadable:
            out.append(BadObject(where, name, "wal", text))
        chain = pitr_wal.chain_from(records, base.timeline, base.start_lsn, base.system_identifier)
        start = pitr_wal.format_lsn(base.start_lsn)
        if chain.end_lsn < base.end_lsn:
            out.append(
                BadObject(where, name, "wal",
                          f"{where}: the WAL from the base backup's start ({start}) stops at "
                          f"{pitr_wal.format_lsn(chain.end_lsn)}, before it is consistent "
                          f"({pitr_wal.format_lsn(base.end_lsn)})")
            )  # fmt: skip
        if chain.gaps:
            out.append(
                BadObject(where, name, "wal",
                          f"{where}: {chain.gap_count} WAL segment(s) missing after "
                          f"{start}: {', '.join(chain.gaps[:5])}: no restore replays past them")
            )  # fmt: skip
        if base.timeline > 1 and chain.history is None:
            out.append(
                BadObject(where, name, "wal",
                          f"{where}: no history file of timeline {base.timeline}")
            )  # fmt: skip
        extra = [chain.history] if chain.history is not None else []
        partial = [chain.partial] if chain.partial is not None else []
        for rec in [*extra, *chain.segments, *partial]:
            obj = recover.wal_object(rec, name)
            ck = (obj.key, obj.size, obj.sha256)
            if cache is not None and ck in cache:
                res.shared += 1
                bad = cache[ck]
            else:
                bad, n = check_object(storage, obj, identities, known=known)
                res.bytes += n
                if cache is not None:
                    cache[ck] = bad
            # a partial the stream stored again meanwhile (or replaced by its whole
            # segment): the newer one is checked by the next verify
            if bad is not None and recover.stored_again(storage, obj, name) is None:
                out.append(bad)
        res.objects += len(extra) + len(chain.segments) + len(partial)
    return out


def verify_snapshot(
    storage: Storage,
    manifest: Manifest,
    *,
    identities: Sequence[Identity] | None = None,
    cache: dict[tuple[str, int, str], BadObject | None] | None = None,
    known: dict[str, str] | None = None,
    deep_check: DeepCheck | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> SnapshotVerify:
    """Given a manifest, check every object it lists (see the module docstring).
    *cache* carries results between snapshots of one run, so a shared object is
    read once. *deep_check* runs only with *identities* and once every other
    check passed. Return the result; raise nothing for bad data, WrongKeyError
    when the identities open not even the manifest's private part."""
    t0 = time.monotonic()
    res = SnapshotVerify(
        host=manifest.host,
        id=manifest.id,
        time="",
        mode=MODE_FULL if identities else MODE_LIGHT,
        objects=len(manifest.objects),
        deep=deep_check is not None,
    )
    mkey = layout.manifest_key(manifest.host, manifest.id)
    if identities:
        try:
            open_private(manifest, identities, mkey)
        except WrongKeyError:
            # the key is wrong, not the data: stop before reading every object for
            # nothing, and record no result (exit 12 names the manifest and the key)
            raise
        except VkError as e:
            res.bad.append(
                BadObject(mkey, "", "manifest", f"{mkey}: private part cannot be opened: {e}")
            )
    res.bad.extend(chain_problems(manifest))
    if identities and any(o.role == "pg-base" for o in manifest.objects):
        res.bad.extend(wal_problems(storage, manifest, identities, res, cache, known))
    for obj in manifest.objects:
        ck = (obj.key, obj.size, obj.sha256)
        if cache is not None and ck in cache:
            res.shared += 1
            bad = cache[ck]
        else:
            log.debug("verify %s (%d bytes)", obj.key, obj.size)
            bad, n = check_object(storage, obj, identities, known=known)
            res.bytes += n
            if cache is not None:
                cache[ck] = bad
        if bad is not None:
            res.bad.append(bad)
    if deep_check is not None and not res.bad and identities:
        res.bad.extend(deep_check(manifest, storage, identities))
    res.seconds = time.monotonic() - t0
    res.time = iso(clock())
    return res


def _verify_one(
    storage: Storage,
    host: str,
    snapshot_id: str,
    manifest: Manifest | None,
    identities: Sequence[Identity] | None,
    cache: dict[tuple[str, int, str], BadObject | None],
    known: dict[str, str],
    deep_check: DeepCheck | None,
    clock: Callable[[], datetime],
) -> SnapshotVerify:
    if manifest is None:
        mkey = layout.manifest_key(host, snapshot_id)
        try:
            manifest = catalog.load_manifest(storage, host, snapshot_id)
        except VkError as e:
            return SnapshotVerify(
                host=host,
                id=snapshot_id,
                time=iso(clock()),
                mode=MODE_FULL if identities else MODE_LIGHT,
                bad=[BadObject(mkey, "", "manifest", f"{mkey}: cannot be read: {e}")],
            )
    return verify_snapshot(
        storage,
        manifest,
        identities=identities,
        cache=cache,
        known=known,
        deep_check=deep_check,
        clock=clock,
    )


def _known_hashes(manifests: Sequence[Manifest]) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in manifests:
        for o in m.objects:
            out.setdefault(o.sha256, o.key)
    return out


def run_verify(
    storage: Storage,
    targets: Sequence[tuple[str, str]],
    *,
    identities: Sequence[Identity] | None = None,
    deep_check: DeepCheck | None = None,
    record: bool = True,
    clock: Callable[[], datetime] = utcnow,
    on_result: Callable[[SnapshotVerify], None] | None = None,
) -> list[SnapshotVerify]:
    """Given (host, id) pairs, verify each snapshot (oldest first), record each
    result in storage when *record*, and return the results. A manifest that
    cannot be read is a bad result naming it, not an exception; an identity that
    is not the snapshots' (WrongKeyError) stops the run, recording nothing for that
    snapshot."""
    hosts = sorted({h for h, _ in targets})
    # Every manifest of these hosts: to name the object a swapped one came from.
    peers: list[Manifest] = []
    for h in hosts:
        for hh, sid in catalog.list_snapshots(storage, h):
            try:
                peers.append(catalog.load_manifest(storage, hh, sid))
            except VkError:
                continue
    by_id = {(m.host, m.id): m for m in peers}
    known = _known_hashes(peers)
    cache: dict[tuple[str, int, str], BadObject | None] = {}
    results: list[SnapshotVerify] = []
    for h, sid in sorted(targets, key=lambda hs: (hs[1], hs[0])):
        res = _verify_one(
            storage, h, sid, by_id.get((h, sid)), identities, cache, known, deep_check, clock
        )
        if record:
            try:
                write_record(storage, res)
            except VkError as e:
                log.warning("could not record the verify result of %s/%s: %s", h, sid, e)
        if on_result is not None:
            on_result(res)
        results.append(res)
    return results


def failure(results: Sequence[SnapshotVerify]) -> IntegrityError | None:
    """Given verify results, return the error naming every bad object, or None."""
    bad = [(r, b) for r in results for b in r.bad]
    if not bad:
        return None
    lines = [f"{r.host}/{r.id}: {b.problem}: {b.detail}" for r, b in bad]
    snaps = len({(r.host, r.id) for r, _ in bad})
    return IntegrityError(
        f"verify found {len(bad)} bad object{'s' if len(bad) > 1 else ''} in {snaps} "
        f"snapshot{'s' if snaps > 1 else ''}:\n  " + "\n  ".join(lines),
        hint="a damaged snapshot cannot be repaired: take a new snapshot now, and check "
        "the storage (disk, bucket policy, lifecycle rules) that lost or changed the data",
    )


# -- deep --------------------------------------------------------------------------


def make_deep_check(
    host: HostConfig, connect: Callable[[HostConfig], Transport], image: str | None = None
) -> DeepCheck:
    """Given a host to restore on (and the server image the operator chose, if any),
    return the `verify --deep` hook: every PostgreSQL source of a snapshot is
    restored into a throwaway server there and its row counts compared with the
    snapshot's (`vkbackup.sources.postgres.deep_check`). A recorded image that may
    not be started (`postgres.deep_image`: the private part can be forged) is a
    "manifest" problem of that snapshot, and nothing of that source runs on the
    host. Raise UsageError for a chosen image that is no Docker reference."""
    if image is not None and not postgres.is_image_ref(image):
        raise UsageError(f"--deep-image {image!r}: not a Docker image reference")

    def check(
        manifest: Manifest, storage: Storage, identities: Sequence[Identity]
    ) -> list[BadObject]:
        private = read_private(manifest, identities)
        ok = {s.name for s in manifest.sources if s.status == "ok"}
        pg = {
            name: entry.meta
            for name, entry in private.sources.items()
            if isinstance(entry.meta, postgres.Meta) and name in ok
        }
        if not pg:
            return []
        by_source = objects_by_source(manifest)
        bad: list[BadObject] = []
        mkey = layout.manifest_key(manifest.host, manifest.id)
        t = connect(host)
        try:
            for name, meta in pg.items():
                objs = by_source.get(name, [])
                dump = next((o.key for o in objs if o.role == "pg-dump"), "")
                where = f"{mkey}: sources.{name}.meta.server.image"
                try:
                    problems = postgres.deep_check(
                        t, storage, identities, meta, objs, where=where, image=image
                    )
                except IntegrityError as e:
                    detail = f"{e} ({e.hint})" if e.hint else str(e)
                    bad.append(BadObject(mkey, name, "manifest", detail))
                    continue
                for problem in problems:
                    bad.append(BadObject(dump, name, "deep", problem))
        finally:
            t.close()
        return bad

    return check
