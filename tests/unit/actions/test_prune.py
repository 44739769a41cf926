"""Prune on a local storage: ordering of deletions, failures, Object Lock, the
lock, unreadable manifests, and which uploads are aborted."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.unit.actions.builders import SnapshotBuilder
from vkbackup import catalog, layout, lock
from vkbackup.actions.prune import gather, prune_host, run_prune
from vkbackup.config.model import RetentionConfig
from vkbackup.crypto import generate_identity
from vkbackup.errors import IntegrityError, LockError, PartialFailure, StorageError
from vkbackup.manifest import Manifest
from vkbackup.storage.local import TEMP_MARK, LocalStorage

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=10)
KEEP_ONE = RetentionConfig(keep_last=1)


class RecordingStorage(LocalStorage):
    """Local storage that records deletes, refuses some, and fakes Object Lock."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.deleted: list[str] = []
        self.refuse: set[str] = set()
        self.locked: dict[str, datetime] = {}

    def delete(self, key: str) -> None:
        if key in self.refuse:
            raise StorageError(f"{self.root}/{key}: delete failed: AccessDenied")
        self.deleted.append(key)
        super().delete(key)

    def retention_until(self, key: str) -> datetime | None:
        super().retention_until(key)
        return self.locked.get(key)


@pytest.fixture
def storage(tmp_path: Path) -> RecordingStorage:
    return RecordingStorage(tmp_path / "store")


def chain_of_three(storage: LocalStorage, host: str = "box") -> list[Manifest]:
    """Three nightly snapshots; the later ones reuse the first one's 'img'."""
    b = SnapshotBuilder(storage, host, [generate_identity().recipient()])
    m1 = b.snapshot(T0, new={"img": b"image", "db": b"dump 1"})
    img = next(o for o in m1.objects if o.source == "img")
    m2 = b.snapshot(T0 + timedelta(days=1), new={"db": b"dump 2"}, reuse={"img": [img]})
    m3 = b.snapshot(T0 + timedelta(days=2), new={"db": b"dump 3"}, reuse={"img": [img]})
    return [m1, m2, m3]


def test_manifests_go_first_then_unused_objects(storage: RecordingStorage) -> None:
    m1, m2, m3 = chain_of_three(storage)
    sizes = {i.key: i.size for i in storage.list("")}
    hp = prune_host(storage, "box", KEEP_ONE, now=NOW)
    assert hp.plan.kept_ids == {m3.id}
    manifests = [layout.manifest_key("box", m.id) for m in (m1, m2)]
    first_object = next(i for i, k in enumerate(storage.deleted) if k.startswith("data/"))
    assert sorted(storage.deleted[:first_object]) == sorted(manifests)
    assert {k for k in storage.deleted if k.startswith("data/")} == {
        o.key for m in (m1, m2) for o in m.objects if o.source == "db"
    }
    # the image uploaded by m1 is used by m3: kept
    img = next(o for o in m3.objects if o.source == "img")
    assert storage.head(img.key) is not None
    assert hp.kept_shared == 1
    assert storage.deleted == [*hp.deleted, layout.lock_key("box")]  # the lock: released
    assert hp.bytes_freed == sum(sizes[k] for k in hp.deleted) > 0


def test_a_manifest_that_cannot_be_deleted_keeps_its_objects(storage: RecordingStorage) -> None:
    m1, m2, _m3 = chain_of_three(storage)
    storage.refuse.add(layout.manifest_key("box", m2.id))
    report = run_prune(storage, KEEP_ONE, now=NOW)
    [hp] = report.hosts
    assert hp.skipped == [m2.id]
    # m2 is still listed, so every object it needs is still there
    assert catalog.load_manifest(storage, "box", m2.id).id == m2.id
    assert all(storage.head(o.key) is not None for o in m2.objects)
    # m1 went, except the image m3 (and m2) use
    assert storage.head(layout.manifest_key("box", m1.id)) is None
    err = report.failure()
    assert isinstance(err, PartialFailure)
    assert layout.manifest_key("box", m2.id) in str(err) and "AccessDenied" in str(err)


def test_object_lock_keeps_a_dropped_snapshot_whole(storage: RecordingStorage) -> None:
    m1, m2, _m3 = chain_of_three(storage)
    dump2 = next(o for o in m2.objects if o.source == "db")
    until = NOW + timedelta(days=20)
    storage.locked[dump2.key] = until
    hp = prune_host(storage, "box", KEEP_ONE, now=NOW)
    d = hp.plan.decision(m2.id)
    assert d.keep and d.locked_until == until
    assert d.reasons[0] == "under Object Lock until 2026-03-31T02:00:00Z"
    assert all(storage.head(o.key) is not None for o in m2.objects)
    assert storage.head(layout.manifest_key("box", m2.id)) is not None
    assert storage.head(layout.manifest_key("box", m1.id)) is None
    # once the lock has expired, a later prune drops it
    hp2 = prune_host(storage, "box", KEEP_ONE, now=until + timedelta(seconds=1))
    assert hp2.plan.dropped_ids == {m2.id}
    assert storage.head(dump2.key) is None


def test_prune_waits_for_no_one_while_a_snapshot_holds_the_lock(
    storage: RecordingStorage,
) -> None:
    chain_of_three(storage)
    held = lock.acquire(storage, "box", "20260311T020000Z-abcd")
    with pytest.raises(LockError) as exc:
        prune_host(storage, "box", KEEP_ONE, now=NOW)
    assert "20260311T020000Z-abcd" in str(exc.value)
    assert storage.deleted == []
    # a dry run takes no lock and deletes nothing
    hp = prune_host(storage, "box", KEEP_ONE, now=NOW, dry_run=True)
    assert len(hp.deleted) == 4 and storage.deleted == []  # 2 manifests, 2 dumps
    lock.release(storage, "box", held)
    prune_host(storage, "box", KEEP_ONE, now=NOW)
    assert storage.head(layout.lock_key("box")) is None


def test_an_unreadable_manifest_stops_its_host_only(storage: RecordingStorage) -> None:
    box = chain_of_three(storage, "box")
    other = chain_of_three(storage, "other")
    bad = storage.root / layout.manifest_key("box", box[1].id)
    bad.write_text("{not json")
    report = run_prune(storage, KEEP_ONE, now=NOW)
    assert [h for h, _ in report.errors] == ["box"]
    assert isinstance(report.errors[0][1], IntegrityError)
    assert layout.manifest_key("box", box[1].id) in str(report.errors[0][1])
    assert not [k for k in storage.deleted if k.split("/")[1] == "box"]
    assert [h.host for h in report.hosts] == ["other"]
    assert {sid for _, sid in catalog.list_snapshots(storage, "other")} == {other[2].id}
    assert isinstance(report.failure(), PartialFailure)
    with pytest.raises(IntegrityError):
        gather(storage, "box")


def test_a_single_host_error_is_returned_as_is(storage: RecordingStorage) -> None:
    box = chain_of_three(storage, "box")
    (storage.root / layout.manifest_key("box", box[0].id)).write_text("[]")
    report = run_prune(storage, KEEP_ONE, hosts=["box"], now=NOW)
    assert isinstance(report.failure(), IntegrityError)


def test_newest_complete_survives_a_newer_partial(storage: RecordingStorage) -> None:
    b = SnapshotBuilder(storage, "box", [generate_identity().recipient()])
    old = b.snapshot(T0, new={"db": b"0"})
    good = b.snapshot(T0 + timedelta(days=1), new={"db": b"1"})
    part = b.snapshot(T0 + timedelta(days=2), new={"db": b"2"}, failed=["vol"], status="partial")
    hp = prune_host(storage, "box", KEEP_ONE, now=NOW)
    assert hp.plan.kept_ids == {good.id, part.id}
    assert hp.plan.dropped_ids == {old.id}


def _temp(storage: LocalStorage, key: str, age: timedelta) -> Path:
    final = storage.root.joinpath(*key.split("/"))
    final.parent.mkdir(parents=True, exist_ok=True)
    p = final.with_name(f"{TEMP_MARK}{final.name}.0123ab")
    p.write_bytes(b"x")
    t = (NOW - age).timestamp()
    os.utime(p, (t, t))
    return p


def test_stale_uploads_of_the_pruned_host_only(storage: RecordingStorage) -> None:
    chain_of_three(storage, "box")
    chain_of_three(storage, "other")
    mine = _temp(storage, "data/box/20260305T020000Z-aaaa/db/x.age", timedelta(days=2))
    theirs = _temp(storage, "data/other/20260305T020000Z-aaaa/db/x.age", timedelta(days=2))
    young = _temp(storage, "data/box/20260310T010000Z-aaaa/db/y.age", timedelta(hours=2))
    hp = prune_host(storage, "box", KEEP_ONE, now=NOW)
    assert [k for k, _ in hp.aborted_uploads] == ["data/box/20260305T020000Z-aaaa/db/x.age"]
    assert not mine.exists() and theirs.exists() and young.exists()
    # without --host every host is pruned, and its uploads aborted
    report = run_prune(storage, KEEP_ONE, now=NOW)
    assert report.failure() is None
    assert not theirs.exists() and young.exists()
