"""Point-in-time recovery across prune, restore and verify, on a local storage with
real objects: snapshots whose postgres source took (or references) a base backup
with its facts object, and WAL stored encrypted by the stream's own `Store` with
records dated at will.

- prune (`prune_host`): a base backup outlives the snapshot that took it, and so
  does the WAL it needs; a new base backup lets the WAL stored before its
  snapshot (less the skew) go, record before object, history files staying; a
  dry run names the same keys and deletes nothing; a snapshot whose manifest
  could not be deleted keeps its WAL; replaced partials no record names are
  swept once old.
- restore (`find_bases`, `base_in`): a base backup's facts come from its facts
  object, so a pruned snapshot's base backup is still found through a later
  snapshot referencing it; a reference without facts is a warning.
- verify (`verify_snapshot`): the WAL from the base backup's start has no gap."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.unit.actions.builders import SnapshotBuilder, iso, snapshot_id
from vkbackup import catalog, layout
from vkbackup.actions.prune import ORPHAN_AGE, prune_host
from vkbackup.actions.verify import BadObject, verify_snapshot
from vkbackup.config.model import RetentionConfig
from vkbackup.crypto import X25519Identity, generate_identity
from vkbackup.errors import StorageError
from vkbackup.manifest import Manifest, ObjectRecord, SourceRecord, encode
from vkbackup.pitr import wal
from vkbackup.pitr.recover import base_in, find_bases
from vkbackup.pitr.stream import ProdFacts, Store
from vkbackup.pitr.wal import WalRecord
from vkbackup.sources.postgres import BASE_MARK, parse_base_facts
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import BytesReader

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=10)
DAY = timedelta(days=1)
SKEW = timedelta(minutes=5)
HOST = "prod"
SOURCE = "db"
SEG = 1024 * 1024  # the smallest segment size keeps the encrypted segments small
SYSID = "7441234567890123456"
KEEP_ONE = RetentionConfig(keep_last=1)
KEEP_ALL = RetentionConfig(keep_last=100)


def after(t: datetime, **delta: float) -> datetime:
    return t + timedelta(**delta)


def seg_name(segno: int, tli: int = 1) -> str:
    return wal.segment_name(tli, segno, SEG)


# -- storage and the world ---------------------------------------------------------------


class Recording(LocalStorage):
    """Local storage that records deletes, in order, and refuses those in *refuse*."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.deleted: list[str] = []
        self.refuse: set[str] = set()

    def delete(self, key: str) -> None:
        if key in self.refuse:
            raise StorageError(f"{self.root}/{key}: delete failed: AccessDenied")
        self.deleted.append(key)
        super().delete(key)

    def keys(self, prefix: str = "") -> set[str]:
        return {i.key for i in self.list(prefix)}

    def set_mtime(self, key: str, when: datetime) -> None:
        path = self.root.joinpath(*key.split("/"))
        os.utime(path, (when.timestamp(), when.timestamp()))


@dataclass
class World:
    storage: Recording
    ident: X25519Identity
    builder: SnapshotBuilder
    store: Store


@pytest.fixture
def w(tmp_path: Path) -> World:
    storage = Recording(tmp_path / "store")
    ident = generate_identity()
    return World(
        storage,
        ident,
        SnapshotBuilder(storage, HOST, [ident.recipient()]),
        Store(storage, [ident.recipient()], HOST, ProdFacts(SYSID, SEG, 15, 1, False)),
    )


# -- base backups and snapshots ----------------------------------------------------------

START_LSN = 3 * SEG + 0x28  # in segment 3
END_LSN = 3 * SEG + 0x138


def facts_text(end_time: datetime, start_lsn: int = START_LSN, end_lsn: int = END_LSN) -> str:
    """What base_script leaves in the facts file: pg_basebackup -v, then prod's facts."""
    when = end_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (
        "pg_basebackup: initiating base backup, waiting for checkpoint to complete\n"
        "pg_basebackup: checkpoint completed\n"
        f"pg_basebackup: write-ahead log start point: {wal.format_lsn(start_lsn)} on timeline 1\n"
        f"pg_basebackup: write-ahead log end point: {wal.format_lsn(end_lsn)}\n"
        "pg_basebackup: base backup completed\n"
        f"{BASE_MARK}\t{when}\t{SYSID}\t/var/lib/postgresql/data\t150018\n"
    )


@dataclass
class Snap:
    manifest: Manifest
    base: list[ObjectRecord]  # its pg-base (and pg-base-facts) objects, taken or referenced

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def base_key(self) -> str:
        return next(o.key for o in self.base if o.role == "pg-base")


def snapshot(
    w: World,
    when: datetime,
    *,
    reuse: Sequence[ObjectRecord] = (),
    facts: bool = True,
    record_base: bool = True,
) -> Snap:
    """A complete snapshot of a postgres source: a dump of its own, and the base
    backup it took at *when* (a tar, and its facts object unless not *facts*), or
    the *reuse* objects of an earlier snapshot's. *record_base*: its private part
    records the base backup it took (as a snapshot does)."""
    sid = snapshot_id(when)
    b = w.builder
    dump = b.put_object(sid, SOURCE, "dump.pgdump.age", f"dump {sid}".encode(), role="pg-dump")
    meta: dict[str, Any] = {
        "container": "app-db-1",
        "database": "app",
        "user": "postgres",
        "server": {"major": 15, "image": "postgres:15"},
        "row_counts": {},
    }
    if reuse:
        base = [replace(o, uploaded_in=o.uploaded_in or o.key.split("/")[2]) for o in reuse]
    else:
        text = facts_text(after(when, minutes=3))
        base = [b.put_object(sid, SOURCE, "base.tar.age", f"base {sid}".encode(), role="pg-base")]
        if facts:
            base.append(
                b.put_object(sid, SOURCE, "base.facts.age", text.encode(), role="pg-base-facts")
            )
        if record_base:
            meta["base"] = parse_base_facts(text, "test")
    manifest = Manifest(
        id=sid,
        host=HOST,
        started=iso(when),
        finished=iso(after(when, minutes=10)),
        tool_version="test",
        status="complete",
        objects=[dump, *base],
        sources=[SourceRecord(SOURCE, "postgres", "ok")],
        private={
            "facts": {"os_release": {"PRETTY_NAME": "Test OS"}, "containers": []},
            "host": {"address": "127.0.0.1", "port": 22, "user": "root"},
            "sources": {SOURCE: {"type": "postgres", "meta": meta, "error": None}},
        },
    )
    w.storage.put(
        layout.manifest_key(HOST, sid), BytesReader(encode(manifest, b.recipients)), if_absent=True
    )
    return Snap(catalog.load_manifest(w.storage, HOST, sid), base)


def drop_manifest(w: World, snap: Snap) -> None:
    """What an earlier prune left of *snap*: its objects, no manifest."""
    w.storage.delete(layout.manifest_key(HOST, snap.id))


# -- WAL ---------------------------------------------------------------------------------


def put_wal(w: World, segno: int, at: datetime, *, kind: str = "full", tli: int = 1) -> WalRecord:
    """Store a WAL object with the stream's Store, then date its record *at* (the
    Store stamps the clock): object and record as the stream leaves them."""
    if kind == "history":
        name, plain = wal.history_name(tli), b"1\t0/5000000\tno recovery target specified\n"
    elif kind == "partial":
        name, plain = seg_name(segno, tli), b"WAL!" * (250 + segno)
    else:
        name, plain = seg_name(segno, tli), hashlib.sha256(b"%d" % segno).digest() * (SEG // 32)
    rec = replace(w.store.put(tli, name, kind, plain), time=at)
    w.storage.put(wal.record_key(rec.key), BytesReader(rec.encode()))
    return rec


def both_keys(rec: WalRecord) -> list[str]:
    return [wal.record_key(rec.key), rec.key]


# -- prune: the horizon ------------------------------------------------------------------


def test_a_base_backup_outlives_the_snapshot_that_took_it_and_so_does_its_wal(
    w: World,
) -> None:
    s1 = snapshot(w, T0)
    s2 = snapshot(w, after(T0, days=1), reuse=s1.base)
    records = [
        put_wal(w, 3, after(T0, minutes=-4)),  # before the snapshot, within the skew
        put_wal(w, 4, after(T0, hours=1)),
        put_wal(w, 5, after(T0, days=1)),
        put_wal(w, 6, after(T0, days=1, hours=1), kind="partial"),
    ]
    wal_keys = w.storage.keys("wal/")
    assert len(wal_keys) == 8

    hp = prune_host(w.storage, HOST, KEEP_ONE, now=NOW, wal_skew=SKEW)

    assert hp.plan.dropped_ids == {s1.id} and hp.plan.kept_ids == {s2.id}
    assert w.storage.head(layout.manifest_key(HOST, s1.id)) is None
    dump1 = next(o.key for o in s1.manifest.objects if o.role == "pg-dump")
    assert dump1 in hp.deleted and w.storage.head(dump1) is None
    # the base backup and its facts: s2 references them
    assert all(w.storage.head(o.key) is not None for o in s1.base)
    assert {o.key for o in s1.base}.isdisjoint(w.storage.deleted)
    # its WAL too: the horizon is when s1 (which took the base backup) started
    assert hp.wal is not None
    assert hp.wal.horizon == T0 - SKEW
    assert hp.wal.delete == () and hp.wal_deleted == [] and hp.wal_orphans == []
    assert hp.wal.kept == len(records) and hp.wal.gaps == ()
    assert w.storage.keys("wal/") == wal_keys
    assert not any(k.startswith("wal/") for k in w.storage.deleted)
    j = hp.to_json()["wal"]
    assert j["horizon"] == "2026-03-01T01:55:00Z" and j["deleted"] == [] and j["kept"] == 4

    # the next prune (s1's manifest long gone) reads the same origin through s2
    again = prune_host(w.storage, HOST, KEEP_ONE, now=NOW + DAY, wal_skew=SKEW)
    assert again.wal is not None and again.wal.horizon == T0 - SKEW
    assert again.wal_deleted == [] and w.storage.keys("wal/") == wal_keys
    # and a restore still finds the base backup, through s2
    bases, warnings = find_bases(w.storage, HOST, SOURCE, [w.ident])
    assert warnings == []
    assert [(b.snapshot, b.obj.key) for b in bases] == [(s1.id, s1.base_key)]


def test_wal_stored_before_the_horizon_goes_with_the_older_base_backup(w: World) -> None:
    s1 = snapshot(w, T0)
    s2 = snapshot(w, after(T0, days=1), reuse=s1.base)
    s3 = snapshot(w, after(T0, days=2))  # a new base backup
    t3 = after(T0, days=2)
    history = put_wal(w, 0, after(T0, days=-30), kind="history", tli=2)
    doomed = [
        put_wal(w, 2, after(T0, minutes=30), kind="partial"),  # a partial left behind
        put_wal(w, 3, after(T0, hours=1)),
        put_wal(w, 4, after(T0, days=1)),
        put_wal(w, 5, after(t3, minutes=-6)),  # just before the horizon
    ]
    kept = [
        put_wal(w, 6, after(t3, minutes=-5)),  # at the horizon
        put_wal(w, 7, after(t3, hours=1)),
        put_wal(w, 8, after(t3, hours=2), kind="partial"),
    ]
    before = w.storage.keys()
    expected = [k for r in doomed for k in both_keys(r)]

    dry = prune_host(w.storage, HOST, KEEP_ONE, now=NOW, wal_skew=SKEW, dry_run=True)
    assert w.storage.deleted == [] and w.storage.keys() == before
    assert dry.wal is not None and dry.wal.horizon == t3 - SKEW
    assert set(dry.wal.delete) == set(doomed)
    assert sorted(dry.wal_deleted) == sorted(expected)
    assert dry.wal.kept == len(kept) + 1 and dry.wal.gaps == ()

    hp = prune_host(w.storage, HOST, KEEP_ONE, now=NOW, wal_skew=SKEW)
    assert hp.plan.kept_ids == {s3.id} and hp.plan.dropped_ids == {s1.id, s2.id}
    assert hp.wal is not None and hp.wal.horizon == t3 - SKEW
    assert hp.wal_deleted == dry.wal_deleted  # the dry run named exactly these
    assert sorted(hp.wal_deleted) == sorted(expected)
    assert hp.failed == []
    for rec in doomed:
        rk, ok = both_keys(rec)
        assert w.storage.head(rk) is None and w.storage.head(ok) is None
        # record first: a record never names an object already gone
        assert w.storage.deleted.index(rk) < w.storage.deleted.index(ok)
    for rec in [history, *kept]:
        assert all(w.storage.head(k) is not None for k in both_keys(rec))
    # s1's base backup: no kept snapshot references it any more
    assert all(w.storage.head(o.key) is None for o in s1.base)
    assert all(w.storage.head(o.key) is not None for o in s3.base)
    # WAL goes last, after every snapshot object
    first_wal = min(w.storage.deleted.index(k) for k in expected)
    assert all(not k.startswith("wal/") for k in w.storage.deleted[:first_wal])
    assert {o.key for o in s1.base} <= set(w.storage.deleted[:first_wal])


def test_a_snapshot_whose_manifest_stays_keeps_the_wal_of_its_base_backup(w: World) -> None:
    s1 = snapshot(w, T0)
    s2 = snapshot(w, after(T0, days=1))  # a base backup of its own
    rec = put_wal(w, 3, after(T0, hours=1))  # needed by s1's base backup only
    w.storage.refuse.add(layout.manifest_key(HOST, s1.id))

    hp = prune_host(w.storage, HOST, KEEP_ONE, now=NOW, wal_skew=SKEW)

    assert hp.plan.dropped_ids == {s1.id} and hp.plan.kept_ids == {s2.id}
    assert hp.skipped == [s1.id]
    # s1 is still listed, restorable: its base backup, and the WAL it replays
    assert hp.wal is not None and hp.wal.horizon == T0 - SKEW
    assert hp.wal_deleted == []
    assert all(w.storage.head(k) is not None for k in both_keys(rec))
    assert all(w.storage.head(o.key) is not None for o in s1.base)

    # once the manifest goes, so does that WAL
    w.storage.refuse.clear()
    hp2 = prune_host(w.storage, HOST, KEEP_ONE, now=NOW, wal_skew=SKEW)
    assert hp2.wal is not None and hp2.wal.horizon == after(T0, days=1) - SKEW
    assert hp2.wal_deleted == both_keys(rec)
    assert all(w.storage.head(k) is None for k in both_keys(rec))
    assert s2.id in hp2.plan.kept_ids


def test_without_a_kept_base_backup_no_wal_is_deleted(w: World) -> None:
    sid = snapshot_id(T0)
    w.builder.snapshot(T0, new={"files": b"etc"}, sid=sid)  # pitr off: no base backup
    rec = put_wal(w, 3, after(T0, days=-5))
    hp = prune_host(w.storage, HOST, KEEP_ONE, now=NOW, wal_skew=SKEW)
    assert hp.wal is not None and hp.wal.horizon is None
    assert hp.wal_deleted == [] and hp.wal.kept == 1
    assert all(w.storage.head(k) is not None for k in both_keys(rec))


# -- prune: replaced partials ------------------------------------------------------------


def orphan_key(segno: int, version: str) -> str:
    return wal.object_key(HOST, 1, seg_name(segno), "partial", version)


def test_a_replaced_partial_no_record_names_is_swept_once_old(w: World) -> None:
    snapshot(w, T0)
    named = put_wal(w, 4, after(T0, hours=2), kind="partial")
    full = put_wal(w, 3, after(T0, hours=1))
    old, young = orphan_key(4, "00000000000000aa"), orphan_key(4, "00000000000000bb")
    other_tli = wal.object_key(HOST, 2, seg_name(9, 2), "partial", "00000000000000cc")
    unnamed_full = wal.object_key(HOST, 1, seg_name(9), "full")
    for key in (old, young, other_tli, unnamed_full):
        w.storage.put(key, BytesReader(b"age ciphertext of a replaced upload"))
    assert ".partial.00000000000000aa.age" in old
    w.storage.set_mtime(old, NOW - ORPHAN_AGE - timedelta(minutes=1))
    w.storage.set_mtime(other_tli, NOW - timedelta(days=3))
    w.storage.set_mtime(young, NOW - ORPHAN_AGE + timedelta(minutes=1))
    w.storage.set_mtime(unnamed_full, NOW - timedelta(days=3))
    w.storage.set_mtime(named.key, NOW - timedelta(days=3))  # old, but its record names it
    before = w.storage.keys()

    dry = prune_host(w.storage, HOST, KEEP_ALL, now=NOW, wal_skew=SKEW, dry_run=True)
    assert dry.wal_orphans == sorted([old, other_tli])
    assert dry.wal_deleted == sorted([old, other_tli])
    assert w.storage.deleted == [] and w.storage.keys() == before

    hp = prune_host(w.storage, HOST, KEEP_ALL, now=NOW, wal_skew=SKEW)
    assert hp.wal_orphans == sorted([old, other_tli])
    assert hp.wal_deleted == sorted([old, other_tli])
    assert w.storage.head(old) is None and w.storage.head(other_tli) is None
    # a young one may be an upload whose record is being swapped; a whole segment is
    # never replaced by another key; the named one is the partial in use
    for key in (young, unnamed_full, *both_keys(named), *both_keys(full)):
        assert w.storage.head(key) is not None, key
    assert hp.failed == []


def test_no_partial_is_swept_while_a_record_cannot_be_read(w: World) -> None:
    snapshot(w, T0)
    put_wal(w, 3, after(T0, hours=1))
    old = orphan_key(4, "00000000000000aa")
    w.storage.put(old, BytesReader(b"x"))
    w.storage.set_mtime(old, NOW - timedelta(days=1))
    # the record that may name it is garbage: whether it does is unknown
    bad = wal.record_key(wal.object_key(HOST, 1, seg_name(4), "partial"))
    w.storage.put(bad, BytesReader(b"{not json"))
    hp = prune_host(w.storage, HOST, KEEP_ALL, now=NOW, wal_skew=SKEW)
    assert [u.split(":")[0] for u in hp.wal_unreadable] == [bad]
    assert hp.wal_orphans == [] and hp.wal_deleted == []
    assert w.storage.head(old) is not None and w.storage.head(bad) is not None


# -- restore: base backups found through their facts objects -----------------------------


def test_a_pruned_snapshots_base_backup_is_found_through_a_later_reference(w: World) -> None:
    s1 = snapshot(w, T0)
    s2 = snapshot(w, after(T0, days=1), reuse=s1.base)
    s3 = snapshot(w, after(T0, days=2), reuse=s1.base)
    drop_manifest(w, s1)

    bases, warnings = find_bases(w.storage, HOST, SOURCE, [w.ident])
    assert warnings == []
    [b] = bases  # one base backup, however many snapshots reference it
    assert b.snapshot == s1.id and b.source == SOURCE and b.obj.key == s1.base_key
    f = b.facts
    assert (f.start_lsn, f.end_lsn, f.timeline) == (START_LSN, END_LSN, 1)
    assert f.end_time == after(T0, minutes=3)
    assert f.system_identifier == SYSID and f.major == 15
    assert f.data_directory == "/var/lib/postgresql/data"
    for s in (s2, s3):
        found = base_in(w.storage, s.manifest, SOURCE, [w.ident])
        assert found is not None and found.snapshot == s1.id and found.facts == f
    assert base_in(w.storage, s2.manifest, "other", [w.ident]) is None


def test_base_backups_are_listed_oldest_first_each_once(w: World) -> None:
    s1 = snapshot(w, T0)
    snapshot(w, after(T0, days=1), reuse=s1.base)
    s3 = snapshot(w, after(T0, days=2))
    snapshot(w, after(T0, days=3), reuse=s3.base)
    bases, warnings = find_bases(w.storage, HOST, SOURCE, [w.ident])
    assert warnings == []
    assert [(b.snapshot, b.obj.key) for b in bases] == [(s1.id, s1.base_key), (s3.id, s3.base_key)]


def test_a_reference_without_its_facts_object_is_a_warning_not_a_base(w: World) -> None:
    s1 = snapshot(w, T0)
    tar_only = [o for o in s1.base if o.role == "pg-base"]
    s2 = snapshot(w, after(T0, days=1), reuse=tar_only)
    drop_manifest(w, s1)
    bases, warnings = find_bases(w.storage, HOST, SOURCE, [w.ident])
    assert bases == []
    [warning] = warnings
    assert f"snapshot {s2.id}" in warning and s1.base_key in warning
    assert "facts" in warning


def test_a_snapshot_that_took_its_base_before_facts_objects_existed(w: World) -> None:
    s1 = snapshot(w, T0, facts=False)  # only its private part records the facts
    [b] = find_bases(w.storage, HOST, SOURCE, [w.ident])[0]
    assert b.snapshot == s1.id and b.facts.start_lsn == START_LSN


# -- verify: the WAL from the base backup's start ----------------------------------------


def wal_bad(bad: Sequence[BadObject]) -> list[BadObject]:
    return [b for b in bad if b.problem == "wal"]


def test_verify_passes_a_complete_chain_from_the_base_backup(w: World) -> None:
    s1 = snapshot(w, T0)
    for n in (3, 4, 5):
        put_wal(w, n, after(T0, hours=n))
    put_wal(w, 6, after(T0, hours=6), kind="partial")
    res = verify_snapshot(w.storage, s1.manifest, identities=[w.ident])
    assert res.bad == [], res.bad
    # the dump, the base tar and its facts; then segments 3 to 5 and the partial
    assert res.objects == 3 + 4


def test_verify_names_a_missing_segment_after_the_base_backups_start(w: World) -> None:
    s1 = snapshot(w, T0)
    put_wal(w, 2, T0)  # before the start: not needed, its neighbour's absence no gap
    for n in (3, 5, 6):
        put_wal(w, n, after(T0, hours=n))
    put_wal(w, 7, after(T0, hours=7), kind="partial")
    res = verify_snapshot(w.storage, s1.manifest, identities=[w.ident])
    [bad] = res.bad
    assert bad.problem == "wal" and bad.source == SOURCE
    assert seg_name(4) in bad.detail and seg_name(5) not in bad.detail
    assert "1 WAL segment(s) missing" in bad.detail
    assert bad.key == f"wal/{HOST}/ (source {SOURCE})"


def test_verify_of_a_chain_that_stops_before_the_backup_is_consistent(w: World) -> None:
    s1 = snapshot(w, T0)
    put_wal(w, 2, T0)  # the stream stopped before the base backup started
    [bad] = wal_bad(verify_snapshot(w.storage, s1.manifest, identities=[w.ident]).bad)
    assert "before it is consistent" in bad.detail
    assert wal.format_lsn(END_LSN) in bad.detail


def test_verify_passes_a_snapshot_reusing_a_base_backup_whose_taker_is_listed(w: World) -> None:
    s1 = snapshot(w, T0)
    s2 = snapshot(w, after(T0, days=1), reuse=s1.base)
    for n in (3, 4):
        put_wal(w, n, after(T0, hours=n))
    assert verify_snapshot(w.storage, s2.manifest, identities=[w.ident]).bad == []


def test_verify_passes_a_snapshot_whose_base_backup_outlived_its_taker(w: World) -> None:
    s1 = snapshot(w, T0)
    s2 = snapshot(w, after(T0, days=1), reuse=s1.base)
    for n in (3, 4):
        put_wal(w, n, after(T0, hours=n))
    prune_host(w.storage, HOST, KEEP_ONE, now=NOW, wal_skew=SKEW)
    assert w.storage.head(layout.manifest_key(HOST, s1.id)) is None
    assert find_bases(w.storage, HOST, SOURCE, [w.ident])[0] != []  # restore finds it
    assert verify_snapshot(w.storage, s2.manifest, identities=[w.ident]).bad == []


def test_verify_of_a_reused_base_backup_checks_its_chain_through_the_facts(w: World) -> None:
    """The gap is found whichever record the facts come from (today: the taker's
    private part, while it is listed)."""
    s1 = snapshot(w, T0)
    s2 = snapshot(w, after(T0, days=1), reuse=s1.base)
    for n in (3, 5):
        put_wal(w, n, after(T0, hours=n))
    [bad] = wal_bad(verify_snapshot(w.storage, s2.manifest, identities=[w.ident]).bad)
    assert seg_name(4) in bad.detail
