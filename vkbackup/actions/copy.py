"""`vkbackup copy`: put a snapshot into another storage as well (3-2-1), byte for byte.

    source storage --open--> VerifyingReader (size, sha256) --put--> copy's storage
         |                                                               ^
         +-- manifest + its .sig, read and checked ---------------------+ (written LAST)

Why it is shaped this way:

- **Ciphertext only, never decrypted.** The machine that copies may hold no
  identity (copying is a chore for the backup machine, which has public keys
  only). Every data object is an age file; it goes across as the bytes it
  is, and the manifest pins each one's size and ciphertext sha256, so the
  copy can be checked without a key. Each source stream is wrapped in a
  `VerifyingReader`, whose last read raises instead of reporting EOF when the
  bytes differ from the record: the destination's put then aborts (multipart
  aborted, temp file removed), so a damaged or swapped object never becomes
  visible in the copy. Nothing is buffered: each object streams through.
- **The record is copied, not rewritten.** The manifest is read through the
  source's `SignedStorage` (its signature checked; refused if bad) and then
  written, with the very signature it was checked against, to the
  destination's *backend*: signature first, record last, as `signed_storage`
  does. Nothing there is overwritten: the signature is put only where there
  is none (one already there must be byte-identical: a killed copy left it),
  and never next to a manifest already there. It is not signed again here: a
  copy is the same snapshot, signed by the machine that took it, and readers
  of the copy check it with the same [signing] keys. Verify and drill records
  say what happened to one storage's bytes; they are not copied (verify the
  copy with `--storage NAME verify`).
- **Manifest last, so a copy is visible only when complete, and resumable.**
  Objects are put first, each visible only complete; a run killed midway
  leaves objects but no manifest. A re-run skips the objects already there
  (same size: `head`) and writes the manifest at the end, after a `head` of
  every object of the snapshot in the copy: one gone meanwhile (a prune, a
  lifecycle rule) fails the snapshot naming it, so a manifest never points
  at a missing object. A manifest already in the copy with the same bytes
  is "already copied"; with other bytes it is an IntegrityError naming the
  key: two different snapshots must never share an id, and nothing is
  overwritten.
- **A skip trusts the size; --check-existing does not.** By default an object
  already in the copy with the recorded size is taken as it is, and an
  "already copied" snapshot is not looked into, as restic's copy skips what
  is present: the objects a previous copy wrote were each checked on the way
  in (size and sha256), so the nightly run reads nothing twice. What that
  trusts is that nothing changed them since. `copy --check-existing`
  re-reads (streams and hashes) every object already in the copy, of the
  "already copied" snapshots too, and copies again one whose sha256 differs
  (a warning names its key; status "repaired" for a snapshot already
  copied); `vkbackup --storage NAME verify` checks a copy without changing
  it (exit 1 naming a bad object).
- **References kept.** An object reused from an earlier snapshot keeps its key
  (`ObjectRecord.uploaded_in`), so copying a chain of snapshots copies each
  shared object once; later snapshots find it there.
- **Object Lock of the copy.** The destination is a Storage built from the
  copy's own StorageConfig: its puts carry the copy's retention, and an
  object skipped because it is already there has its retention extended
  (`extend_retention`), as a snapshot does for the objects it reuses.
- **The host's lock in the copy.** Objects without their manifest look like
  the leftovers of a crashed run to a prune of the copy; the copy holds the
  host's lock in the destination (the one snapshot and prune take) while it
  writes, so the two never run together. The lock of a copy killed midway is
  taken over by the next copy (there is nothing to inspect: only complete
  objects, no manifest) when that is proven: taken on this machine, and no
  process has its pid any more. A copy's lock of another machine, or one
  merely older than `lock.STALE_AFTER` (its process may still run), and a
  stale snapshot or prune lock, need --break-lock. A lock is released only
  when it is still exactly the one this run wrote.
- **Failures stay per destination.** One copy being unreachable does not stop
  the others; a snapshot that cannot be copied (a damaged source object) does
  not stop the next one. The result says, per snapshot and per copy, what was
  copied, skipped or failed; `CopyResult.failure()` turns it into the error
  and exit code (1, or 3 when some went through).

The action receives its storages (the composition root opens them) and a
Progress; it never opens storage itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vkbackup import catalog, layout, lock
from vkbackup.catalog import read_small
from vkbackup.errors import (
    IntegrityError,
    LockError,
    LockHeldError,
    ObjectExistsError,
    ObjectNotFoundError,
    PartialFailure,
    StorageUnreachableError,
    UsageError,
    VkError,
)
from vkbackup.logs import get_logger
from vkbackup.manifest import ObjectRecord
from vkbackup.progress import CountingReader, Progress, human_bytes
from vkbackup.signed_storage import RECORD_LIMIT, SignedStorage
from vkbackup.storage.base import Storage
from vkbackup.streams import CHUNK, BytesReader, HashingReader, VerifyingReader

log = get_logger("copy")

#: what the lock in the destination says it is held for
LOCK_ID = "copy"


@dataclass
class CopyItem:
    """One snapshot into one copy: *status* "pending" (not yet tried), "copied",
    "already" (its manifest was there with the same bytes), "repaired" (it was
    there, and --check-existing found objects to copy again), "would copy"
    (dry run) or "failed". *objects_checked*: objects already in the copy that
    were read back and hashed (--check-existing)."""

    copy: str
    host: str
    id: str
    status: str = "pending"
    objects_copied: int = 0
    objects_skipped: int = 0
    objects_checked: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0
    error: str | None = None
    exc: VkError | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "copy": self.copy,
            "host": self.host,
            "id": self.id,
            "status": self.status,
            "objects_copied": self.objects_copied,
            "objects_skipped": self.objects_skipped,
            "objects_checked": self.objects_checked,
            "bytes_copied": self.bytes_copied,
            "bytes_skipped": self.bytes_skipped,
            "error": self.error,
        }

    def summary(self) -> str:
        """One line: "copy offsite: prod/ID copied: 3 objects (1.2 MiB), 2 already there"."""
        head = f"copy {self.copy}: {self.host}/{self.id} {self.status}"
        if self.status == "failed":
            return f"{head}: {self.error}"
        checked = f", {self.objects_checked} read back and checked" if self.objects_checked else ""
        if self.status == "already":
            return f"{head} copied (the same manifest is there){checked}"
        verb = "to copy" if self.status == "would copy" else "copied"
        return (
            f"{head}: {self.objects_copied} objects {verb} ({human_bytes(self.bytes_copied)}), "
            f"{self.objects_skipped} already there ({human_bytes(self.bytes_skipped)}){checked}"
        )


@dataclass
class CopyResult:
    """Every snapshot into every copy asked for, in the order done."""

    source: str  # where the snapshots were read: describe() of the source storage
    items: list[CopyItem] = field(default_factory=list)
    dry_run: bool = False

    @property
    def failed(self) -> list[CopyItem]:
        return [i for i in self.items if i.status == "failed"]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dry_run": self.dry_run,
            "ok": not self.failed,
            "snapshots": [i.to_json() for i in self.items],
            "objects_copied": sum(i.objects_copied for i in self.items),
            "bytes_copied": sum(i.bytes_copied for i in self.items),
        }

    def failure(self) -> VkError | None:
        """None when every item went through. Else the error to exit with: when
        nothing went through and one error explains it, that error (its exit
        code: 10 unreachable, 11 lock held, 1...); when nothing went through,
        an error naming each failure; when some did, PartialFailure (exit 3)
        naming each copy and snapshot that failed."""
        bad = self.failed
        if not bad:
            return None
        named = "; ".join(f"copy {i.copy}: {i.host}/{i.id}: {i.error}" for i in bad[:5])
        if len(bad) > 5:
            named += f"; {len(bad) - 5} more"
        if len(bad) < len(self.items):
            return PartialFailure(f"some copies failed: {named}")
        if len({i.error for i in bad}) == 1 and bad[0].exc is not None:
            return bad[0].exc
        err = VkError(f"copy failed: {named}")
        codes = {i.exc.exit_code for i in bad if i.exc is not None}
        if len(codes) == 1:
            err.exit_code = codes.pop()
        return err


def select(
    source: Storage, ref: str | None, *, host: str | None = None, all_: bool = False
) -> list[tuple[str, str]]:
    """Given the source storage and what the command line asks for, return the
    (host, snapshot id) to copy, oldest first: *all_* every listed snapshot (of
    *host*); *ref* None or "latest" the newest complete snapshot of *host*, or
    of each host when none is named; else the one snapshot *ref* names (an id
    or a unique prefix). Raise UsageError for a ref with *all_*,
    ObjectNotFoundError when nothing matches."""
    if all_ and ref is not None:
        raise UsageError("give a SNAPSHOT or --all, not both")
    listed = catalog.list_snapshots(source, host)
    if all_:
        if not listed:
            where = f" of host {host!r}" if host else ""
            raise ObjectNotFoundError(f"{source.describe()}: no snapshot{where}")
        return listed
    if ref is None or ref == "latest":
        hosts = [host] if host else sorted({h for h, _ in listed})
        if not hosts:
            raise ObjectNotFoundError(f"{source.describe()}: no snapshot")
        picked = [catalog.resolve(source, "latest", h) for h in hosts]
        return sorted(((m.host, m.id) for m in picked), key=lambda hs: (hs[1], hs[0]))
    m = catalog.resolve(source, ref, host)
    return [(m.host, m.id)]


def run_copy(
    source: SignedStorage,
    destinations: Mapping[str, Storage],
    snapshots: Sequence[tuple[str, str]],
    *,
    dry_run: bool = False,
    break_lock: bool = False,
    check_existing: bool = False,
    progress: Progress | None = None,
) -> CopyResult:
    """Given the source storage (records signed and checked), the destinations
    by copy name (backends: records are written as they are) and the (host, id)
    of the snapshots to copy, oldest first, copy each snapshot into each
    destination (see the module docstring; *check_existing*: read back what is
    already there, see copy_snapshot) and return what happened. Failures are
    recorded in the result, not raised, except an interrupt."""
    result = CopyResult(source.describe(), dry_run=dry_run)
    progress = progress or Progress(enabled=False)
    progress.start()
    opts = _Options(dry_run, break_lock, check_existing)
    try:
        for name, dest in destinations.items():
            _copy_to(source, name, dest, snapshots, result, opts, progress)
    finally:
        progress.stop()
    return result


@dataclass(frozen=True)
class _Options:
    dry_run: bool
    break_lock: bool
    check_existing: bool


def _copy_to(
    source: SignedStorage,
    name: str,
    dest: Storage,
    snapshots: Sequence[tuple[str, str]],
    result: CopyResult,
    opts: _Options,
    progress: Progress,
) -> None:
    """Copy *snapshots* into the one destination *dest* named *name*, host by
    host under that host's lock in *dest*; append an item per snapshot. A host
    whose lock is held fails alone; storage that cannot be reached fails the
    rest of this destination without trying each snapshot again."""
    todo = [CopyItem(name, h, sid) for h, sid in snapshots]
    result.items.extend(todo)
    seen: set[str] = set()  # objects read back or written in this run: checked once
    for host in dict.fromkeys(i.host for i in todo):
        mine = [i for i in todo if i.host == host]
        try:
            held = None if opts.dry_run else _lock(dest, name, host, opts.break_lock)
        except VkError as e:
            _fail(mine, e)
            if isinstance(e, StorageUnreachableError):
                _fail([i for i in todo if i.status == "pending"], e)
                return
            continue
        try:
            for item in mine:
                try:
                    copy_snapshot(
                        source,
                        dest,
                        item,
                        dry_run=opts.dry_run,
                        check_existing=opts.check_existing,
                        seen=seen,
                        progress=progress,
                    )
                except VkError as e:
                    _fail([item], e)
                    log.error("copy %s: %s/%s failed: %s", name, host, item.id, e)
                    if isinstance(e, StorageUnreachableError):
                        _fail([i for i in todo if i.status == "pending"], e)
                        return
                else:
                    log.debug("%s", item.summary())
        finally:
            if held is not None:
                try:
                    lock.release(dest, host, held)
                except VkError as e:
                    log.warning("copy %s: could not release the lock of %s: %s", name, host, e)


def _lock(dest: Storage, name: str, host: str, break_lock: bool) -> lock.LockInfo:
    """Take *host*'s lock in *dest*. The lock of a copy that was killed midway
    is taken over when that is proven: taken on this machine, by a process that
    is gone (`lock.process_gone`); a copy leaves nothing to look at, only
    complete objects and no manifest, and running it again is how it is
    finished. Any other stale lock (a copy's of another machine, or one merely
    old, whose process may still run; a snapshot's, a prune's) needs
    --break-lock."""
    try:
        return lock.acquire(dest, host, LOCK_ID, break_lock=break_lock)
    except LockHeldError:
        raise
    except LockError:
        info = lock.holder(dest, host)
        if info is None or info.snapshot_id != LOCK_ID or not lock.process_gone(info):
            raise
        log.warning(
            "copy %s: taking over the lock of a copy that was killed (pid %d on this machine)",
            name,
            info.pid,
        )
        return lock.take_over(dest, host, LOCK_ID, info)


def _fail(items: Sequence[CopyItem], e: VkError) -> None:
    for i in items:
        i.status, i.error, i.exc = "failed", str(e), e


def copy_snapshot(
    source: SignedStorage,
    dest: Storage,
    item: CopyItem,
    *,
    dry_run: bool = False,
    check_existing: bool = False,
    seen: set[str] | None = None,
    progress: Progress | None = None,
) -> None:
    """Copy the snapshot *item* names from *source* into *dest*: every object not
    already there (checked on the way), then the manifest's signature, then the
    manifest, byte for byte, once every object is there (`_all_there`). Fill
    *item*'s counts. An object already in *dest* with the recorded size is
    skipped; with *check_existing* it is first read back and hashed, and copied
    again when its sha256 differs, and the objects of a snapshot already
    copied are checked too (status "repaired" when one had to be copied
    again); *seen* holds the keys this run already read back or wrote into
    *dest* (an object shared by several snapshots is read once), and gets
    this snapshot's. Raise IntegrityError when the manifest or an object does
    not check (nothing wrong becomes visible in *dest*), when an object is
    missing from *dest* before the manifest is written, or when *dest* holds
    another manifest (or, without its manifest, another signature) under the
    same key; any StorageError of either side."""
    key = layout.manifest_key(item.host, item.id)
    data, signature = source.read_signed(key)
    manifest = catalog.decode_manifest(data, item.host, item.id)
    already = dest.head(key) is not None
    if already:
        _same_record(dest, key, data)
        if not check_existing:
            item.status = "already"
            return
    progress = progress or Progress(enabled=False)
    seen = set() if seen is None else seen
    for obj in manifest.objects:
        info = dest.head(obj.key)
        if info is not None and info.size == obj.size:
            recheck = check_existing and obj.key not in seen
            if recheck:
                item.objects_checked += 1
            if not recheck or _holds(dest, obj, progress):
                seen.add(obj.key)
                if not dry_run and not already:
                    dest.extend_retention(obj.key)  # the copy's Object Lock covers this one too
                item.objects_skipped += 1
                item.bytes_skipped += obj.size
                continue
            log.warning(
                "%s: in %s with the right size but other bytes (sha256): copied again",
                obj.key,
                dest.describe(),
            )
        elif info is not None:
            log.warning(
                "%s: in %s with %d bytes, the manifest says %d: copied again",
                obj.key,
                dest.describe(),
                info.size,
                obj.size,
            )
        elif already:
            log.warning("%s: missing from %s: copied again", obj.key, dest.describe())
        if not dry_run:
            counter = progress.counter(obj.name)
            try:
                with source.open(obj.key) as stream:
                    checked = VerifyingReader(
                        CountingReader(stream, counter), obj.size, obj.sha256, obj.key
                    )
                    dest.put(obj.key, checked, size_hint=obj.size)
            finally:
                counter.done = True
            seen.add(obj.key)
        item.objects_copied += 1
        item.bytes_copied += obj.size
    if dry_run:
        item.status = "already" if already and not item.objects_copied else "would copy"
        return
    _all_there(dest, manifest.objects)
    if already:
        item.status = "repaired" if item.objects_copied else "already"
        return
    item.status = _put_record(dest, key, data, signature)


def _holds(dest: Storage, obj: ObjectRecord, progress: Progress) -> bool:
    """Read *obj* in *dest* to the end; return True when it has the recorded
    size and sha256 (False also when it is gone or its backend refuses it as
    damaged)."""
    counter = progress.counter(f"check {obj.name}")
    try:
        with dest.open(obj.key) as stream:
            seen = HashingReader(CountingReader(stream, counter))
            while seen.read(CHUNK):
                pass
    except (ObjectNotFoundError, IntegrityError):
        return False
    finally:
        counter.done = True
    return seen.size == obj.size and seen.sha256_hex() == obj.sha256


def _all_there(dest: Storage, objects: Sequence[ObjectRecord]) -> None:
    """Raise IntegrityError naming the first of *objects* that *dest* does not
    hold with its recorded size (`head`: no bytes read), so a manifest is never
    written next to a missing object."""
    for obj in objects:
        info = dest.head(obj.key)
        if info is not None and info.size == obj.size:
            continue
        what = "is missing" if info is None else f"has {info.size} bytes, not {obj.size}"
        raise IntegrityError(
            f"{dest.describe()}: {obj.key} {what} after it was copied: the manifest is not written",
            hint="something deletes objects in the copy (a prune of it, a lifecycle rule): "
            "find it, then run the copy again",
        )


def _put_record(dest: Storage, key: str, data: bytes, signature: bytes | None) -> str:
    """Write the manifest *data* at *key* of *dest*, its *signature* first, and
    return the status: "copied", or "already" when the same manifest is there.
    The signature of a manifest that is there is never written; the signature
    is written only where there is none (put if absent), and one already there
    must be byte-identical (a killed copy left it). Raise IntegrityError naming
    the key of another manifest or signature found there."""
    if dest.head(key) is not None:  # another run copied it meanwhile
        _same_record(dest, key, data)
        return "already"
    sig_key = layout.signature_key(key)
    wrote_sig = False
    if signature is not None:
        try:
            dest.put(sig_key, BytesReader(signature), if_absent=True)
            wrote_sig = True
        except ObjectExistsError:
            if dest.head(key) is not None:
                _same_record(dest, key, data)
                return "already"
            if _read_or_empty(dest, sig_key) != signature:
                raise IntegrityError(
                    f"{dest.describe()}: {sig_key}: another signature is already there, "
                    "without its manifest: refusing to overwrite it",
                    hint=f"compare it with {sig_key} in the source: if it is a leftover, "
                    "delete it from the copy and run the copy again",
                ) from None
    try:
        dest.put(key, BytesReader(data), size_hint=len(data), if_absent=True)
        return "copied"
    except ObjectExistsError:  # another run copied it meanwhile: the same bytes, or an error
        try:
            _same_record(dest, key, data)
        except IntegrityError:
            if wrote_sig:  # it had no signature: do not leave ours next to it
                try:
                    dest.delete(sig_key)
                except VkError as e:
                    log.warning("%s: could not remove the signature just written: %s", sig_key, e)
            raise
        return "already"


def _read_or_empty(dest: Storage, key: str) -> bytes:
    try:
        return read_small(dest, key, RECORD_LIMIT)
    except (IntegrityError, ObjectNotFoundError):
        return b""


def _same_record(dest: Storage, key: str, data: bytes) -> None:
    """Raise IntegrityError naming *key* unless *dest* holds exactly *data* there."""
    try:
        held = read_small(dest, key, RECORD_LIMIT)
    except IntegrityError:
        held = b""
    if held != data:
        raise IntegrityError(
            f"{dest.describe()}: {key}: a different manifest is already there: "
            "refusing to overwrite it",
            hint="two snapshots with one id: compare both (`vkbackup --storage NAME show`) "
            "before deleting the one in the copy",
        )
