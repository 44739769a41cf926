"""`vkbackup copy` (issue 17, copies 3-2-1) on local directories: snapshots built
in a signed primary (tests/unit/actions/builders.py), copied into a second
directory by `vkbackup.actions.copy`, byte for byte and checked on the way."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.unit.actions.builders import SnapshotBuilder
from vkbackup import catalog, layout, lock
from vkbackup.actions.copy import CopyItem, CopyResult, copy_snapshot, run_copy, select
from vkbackup.crypto import generate_identity
from vkbackup.errors import (
    IntegrityError,
    LockError,
    LockHeldError,
    PartialFailure,
    StorageUnreachableError,
    UsageError,
)
from vkbackup.manifest import Manifest
from vkbackup.signed_storage import SignedStorage
from vkbackup.signing import Trust
from vkbackup.storage.base import ObjectInfo
from vkbackup.storage.local import TEMP_MARK, LocalStorage
from vkbackup.storage.wrapper import StorageWrapper
from vkbackup.streams import BytesReader, Readable

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


class Env:
    """A signed primary with a builder, and a copy directory (the destination backend)."""

    def __init__(self, tmp: Path) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.trust = Trust(key=self.key, trusted=(self.key.public_key(),))
        self.raw = LocalStorage(tmp / "primary")
        self.source = SignedStorage(self.raw, self.trust)
        self.dest = ExtendingStorage(tmp / "copy")
        self.builder = SnapshotBuilder(self.source, "box", [generate_identity().recipient()])

    def chain(self) -> list[Manifest]:
        """Two snapshots; the second reuses the first one's 'img'."""
        m1 = self.builder.snapshot(T0, new={"img": b"image" * 1000, "db": b"dump 1"})
        img = next(o for o in m1.objects if o.source == "img")
        m2 = self.builder.snapshot(
            T0 + timedelta(days=1), new={"db": b"dump 2"}, reuse={"img": [img]}
        )
        return [m1, m2]

    def copy(self, *snaps: Manifest, dest: object = None, **kw: object) -> CopyResult:
        return run_copy(
            self.source,
            {"offsite": dest or self.dest},  # type: ignore[dict-item]
            [(m.host, m.id) for m in snaps],
            **kw,  # type: ignore[arg-type]
        )


class ExtendingStorage(LocalStorage):
    """Local storage that records the keys whose Object Lock retention was extended."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.extended: list[str] = []

    def extend_retention(self, key: str) -> datetime | None:
        self.extended.append(key)
        return super().extend_retention(key)


def raw_bytes(store: LocalStorage, key: str) -> bytes:
    return store.root.joinpath(*key.split("/")).read_bytes()


def files(store: LocalStorage) -> list[str]:
    """Every file under the directory, temporary ones included."""
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_chain_is_copied_byte_for_byte_and_a_reused_object_once(env: Env) -> None:
    m1, m2 = env.chain()
    result = env.copy(m1, m2)
    assert result.failure() is None
    first, second = result.items
    assert (first.status, first.objects_copied, first.objects_skipped) == ("copied", 2, 0)
    # the reused image keeps its key: it is already there, only the new dump goes across
    assert (second.status, second.objects_copied, second.objects_skipped) == ("copied", 1, 1)
    img = next(o for o in m2.objects if o.source == "img")
    assert second.bytes_skipped == img.size
    assert img.key.startswith(layout.data_prefix("box", m1.id))
    # every object, manifest and signature is there byte for byte; verify/lock records are not
    for m in (m1, m2):
        key = layout.manifest_key("box", m.id)
        for k in (key, layout.signature_key(key), *(o.key for o in m.objects)):
            assert raw_bytes(env.dest, k) == raw_bytes(env.raw, k), k
    assert not [f for f in files(env.dest) if f.startswith(("locks", "verify"))]
    # the copy reads as a signed storage with the same keys, without re-signing anything
    copy = SignedStorage(env.dest, env.trust)
    assert [sid for _, sid in catalog.list_snapshots(copy)] == [m1.id, m2.id]
    assert catalog.load_manifest(copy, "box", m2.id).objects == m2.objects
    # the copy's Object Lock is asked to cover the object the second snapshot reuses
    assert env.dest.extended == [img.key]


def test_rerun_is_already_copied_and_writes_nothing(env: Env) -> None:
    m1, m2 = env.chain()
    env.copy(m1, m2)
    before = {f: (env.dest.root / f).stat().st_mtime_ns for f in files(env.dest)}
    again = env.copy(m1, m2)
    assert [i.status for i in again.items] == ["already", "already"]
    assert sum(i.objects_copied for i in again.items) == 0
    assert {f: (env.dest.root / f).stat().st_mtime_ns for f in files(env.dest)} == before


def test_objects_already_there_are_skipped_and_their_retention_extended(env: Env) -> None:
    (m1,) = env.chain()[:1]
    db = next(o for o in m1.objects if o.source == "db")
    env.dest.put(db.key, BytesReader(raw_bytes(env.raw, db.key)))
    item = env.copy(m1).items[0]
    assert (item.objects_copied, item.objects_skipped) == (1, 1)
    assert env.dest.extended == [db.key]


def test_corrupted_source_object_fails_naming_it_and_leaves_nothing_visible(env: Env) -> None:
    m1, m2 = env.chain()
    db = next(o for o in m1.objects if o.source == "db")
    path = env.raw.root.joinpath(*db.key.split("/"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, other bytes: only the sha256 tells
    path.write_bytes(bytes(data))
    result = env.copy(m1)
    item = result.items[0]
    assert item.status == "failed"
    assert isinstance(item.exc, IntegrityError)
    assert db.key in str(item.error)
    assert env.dest.head(db.key) is None
    assert env.dest.head(layout.manifest_key("box", m1.id)) is None
    assert not any(TEMP_MARK in f for f in files(env.dest)), files(env.dest)
    err = result.failure()
    assert isinstance(err, IntegrityError) and db.key in str(err)
    # the next snapshot does not use the damaged object: it still goes across (exit 3)
    both = env.copy(m1, m2)
    assert [i.status for i in both.items] == ["failed", "copied"]
    assert isinstance(both.failure(), PartialFailure)


class DiesMidStream(StorageWrapper):
    """Puts whose source dies after *after* bytes, once: a kill in mid-copy."""

    def __init__(self, inner: LocalStorage, key: str, after: int) -> None:
        super().__init__(inner)
        self.key, self.after = key, after

    def put(
        self, key: str, src: Readable, *, size_hint: int | None = None, if_absent: bool = False
    ) -> ObjectInfo:
        if key != self.key:
            return self.inner.put(key, src, size_hint=size_hint, if_absent=if_absent)
        outer = self

        class Dying:
            sent = 0

            def read(self, n: int = -1, /) -> bytes:
                if self.sent >= outer.after:
                    raise KeyboardInterrupt  # what SIGTERM becomes
                data = src.read(min(n if n > 0 else 4096, 4096))
                self.sent += len(data)
                return data

        return self.inner.put(key, Dying(), size_hint=size_hint, if_absent=if_absent)


def test_killed_midway_then_rerun_completes(env: Env) -> None:
    m1, m2 = env.chain()
    img = next(o for o in m1.objects if o.source == "img")
    db = next(o for o in m1.objects if o.source == "db")
    with pytest.raises(KeyboardInterrupt):
        env.copy(m1, m2, dest=DiesMidStream(env.dest, img.key, 1000))
    # nothing half-written, no manifest, and the lock was released
    assert env.dest.head(img.key) is None
    assert env.dest.head(layout.manifest_key("box", m1.id)) is None
    assert env.dest.head(layout.lock_key("box")) is None
    done_before = [k for k in (db.key,) if env.dest.head(k) is not None]
    result = env.copy(m1, m2)
    assert result.failure() is None
    assert [i.status for i in result.items] == ["copied", "copied"]
    assert result.items[0].objects_skipped == len(done_before)
    for k in (img.key, db.key, layout.manifest_key("box", m2.id)):
        assert raw_bytes(env.dest, k) == raw_bytes(env.raw, k)


def test_a_different_manifest_in_the_copy_is_an_error_naming_it(env: Env) -> None:
    (m1,) = env.chain()[:1]
    key = layout.manifest_key("box", m1.id)
    env.dest.put(key, BytesReader(b'{"not": "the same"}'))
    item = env.copy(m1).items[0]
    assert item.status == "failed" and isinstance(item.exc, IntegrityError)
    assert key in str(item.error)
    assert raw_bytes(env.dest, key) == b'{"not": "the same"}'  # never overwritten


def test_a_manifest_with_a_bad_signature_is_refused_and_nothing_copied(env: Env) -> None:
    (m1,) = env.chain()[:1]
    key = layout.manifest_key("box", m1.id)
    path = env.raw.root.joinpath(*key.split("/"))
    path.write_bytes(path.read_bytes().replace(b'"status": "complete"', b'"status": "partial" '))
    item = env.copy(m1).items[0]
    assert item.status == "failed" and isinstance(item.exc, IntegrityError)
    assert files(env.dest) == []


def test_without_signing_the_manifest_goes_across_without_a_signature(tmp_path: Path) -> None:
    raw = LocalStorage(tmp_path / "primary")
    source = SignedStorage(raw, Trust(key=None, trusted=()))
    m = SnapshotBuilder(source, "box", [generate_identity().recipient()]).snapshot(
        T0, new={"etc": b"x"}
    )
    dest = LocalStorage(tmp_path / "copy")
    assert run_copy(source, {"c": dest}, [("box", m.id)]).failure() is None
    key = layout.manifest_key("box", m.id)
    assert raw_bytes(dest, key) == raw_bytes(raw, key)
    assert dest.head(layout.signature_key(key)) is None


def test_dry_run_writes_nothing(env: Env) -> None:
    m1, m2 = env.chain()
    result = env.copy(m1, m2, dry_run=True)
    assert [i.status for i in result.items] == ["would copy", "would copy"]
    assert [i.objects_copied for i in result.items] == [2, 2]  # nothing there yet to skip
    assert files(env.dest) == []


def test_unreachable_destination_fails_every_snapshot_once(env: Env, tmp_path: Path) -> None:
    m1, m2 = env.chain()
    gone = LocalStorage(tmp_path / "not-mounted", create=False)
    result = run_copy(
        env.source, {"usb": gone, "offsite": env.dest}, [("box", m1.id), ("box", m2.id)]
    )
    by = {(i.copy, i.id): i.status for i in result.items}
    assert by == {
        ("usb", m1.id): "failed",
        ("usb", m2.id): "failed",
        ("offsite", m1.id): "copied",
        ("offsite", m2.id): "copied",
    }
    assert isinstance(result.items[0].exc, StorageUnreachableError)
    err = result.failure()
    assert isinstance(err, PartialFailure) and "copy usb" in str(err)


def test_failure_when_everything_failed_keeps_the_exit_code(env: Env, tmp_path: Path) -> None:
    m1, m2 = env.chain()
    gone = LocalStorage(tmp_path / "not-mounted", create=False)
    err = run_copy(env.source, {"usb": gone}, [("box", m1.id), ("box", m2.id)]).failure()
    assert isinstance(err, StorageUnreachableError)


def test_select_latest_of_each_host_all_and_one(env: Env) -> None:
    m1, m2 = env.chain()
    other = SnapshotBuilder(env.source, "web", [generate_identity().recipient()])
    w1 = other.snapshot(T0 + timedelta(hours=1), new={"etc": b"w"})
    p = other.snapshot(T0 + timedelta(days=3), new={"etc": b"p"}, status="partial")
    assert select(env.source, None) == [("web", w1.id), ("box", m2.id)]  # latest complete
    assert select(env.source, "latest", host="box") == [("box", m2.id)]
    assert select(env.source, None, all_=True) == [
        ("box", m1.id),
        ("web", w1.id),
        ("box", m2.id),
        ("web", p.id),
    ]
    assert select(env.source, m1.id[:12] if m1.id[:12] != m2.id[:12] else m1.id) == [("box", m1.id)]
    with pytest.raises(UsageError):
        select(env.source, m1.id, all_=True)


def test_copy_snapshot_fills_the_item(env: Env) -> None:
    (m1,) = env.chain()[:1]
    item = CopyItem("offsite", "box", m1.id)
    copy_snapshot(env.source, env.dest, item)
    assert item.status == "copied"
    assert item.bytes_copied == sum(o.size for o in m1.objects)
    assert "2 objects copied" in item.summary()
    assert item.to_json()["objects_copied"] == 2


def put_lock(store: LocalStorage, owner_id: str, pid: int) -> None:
    info = {
        "owner": "root@here",
        "machine": socket.gethostname(),
        "pid": pid,
        "host": "box",
        "time": datetime.now(UTC).isoformat(),
        "snapshot_id": owner_id,
    }
    store.put(layout.lock_key("box"), BytesReader(json.dumps(info).encode()))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_killed_copys_stale_lock_is_taken_over_others_are_not(env: Env) -> None:
    (m1,) = env.chain()[:1]
    put_lock(env.dest, "prune", dead_pid())
    item = env.copy(m1).items[0]
    assert item.status == "failed" and isinstance(item.exc, LockError)
    assert "--break-lock" in (item.exc.hint or "")
    put_lock(env.dest, "copy", os.getpid())  # a live copy: exit 11
    item = env.copy(m1).items[0]
    assert item.status == "failed" and isinstance(item.exc, LockHeldError)
    put_lock(env.dest, "copy", dead_pid())  # a killed copy: taken over
    assert env.copy(m1).items[0].status == "copied"
    assert env.dest.head(layout.lock_key("box")) is None


# -- review fixes: --check-existing, objects there before the manifest, the signature,
# -- the lock of a killed copy ------------------------------------------------------------


@pytest.fixture
def caplog_vk(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Any:
    """caplog, hearing vkbackup's warnings (its logger does not propagate)."""
    monkeypatch.setattr(logging.getLogger("vkbackup"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="vkbackup")
    return caplog


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def flip_a_byte(store: LocalStorage, key: str) -> None:
    """Same size, other bytes: only a sha256 tells."""
    path = store.root.joinpath(*key.split("/"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_damaged_object_of_a_copied_snapshot_is_trusted_unless_check_existing(
    env: Env, caplog_vk: pytest.LogCaptureFixture
) -> None:
    m1, m2 = env.chain()
    assert env.copy(m1, m2).failure() is None
    img = next(o for o in m1.objects if o.source == "img")  # m2 reuses it
    flip_a_byte(env.dest, img.key)
    # the nightly path trusts what a previous copy wrote: nothing is read back
    again = env.copy(m1, m2)
    assert [(i.status, i.objects_checked) for i in again.items] == [("already", 0)] * 2
    assert raw_bytes(env.dest, img.key) != raw_bytes(env.raw, img.key)
    # --check-existing reads every object back and copies the damaged one again, once
    checked = env.copy(m1, m2, check_existing=True)
    assert checked.failure() is None
    first, second = checked.items
    assert (first.status, first.objects_copied, first.objects_checked) == ("repaired", 1, 2)
    # the image it reuses was read back (and copied again) for the first: not read twice
    assert (second.status, second.objects_copied, second.objects_checked) == ("already", 0, 1)
    assert second.objects_skipped == 2
    assert raw_bytes(env.dest, img.key) == raw_bytes(env.raw, img.key)
    warned = warnings_in(caplog_vk)
    assert any(img.key in w and "copied again" in w for w in warned), warned
    assert "1 objects copied" in first.summary() and "2 read back" in first.summary()
    assert checked.to_json()["snapshots"][0]["objects_checked"] == 2
    # and a clean copy checked again changes nothing
    before = {f: (env.dest.root / f).stat().st_mtime_ns for f in files(env.dest)}
    assert [i.status for i in env.copy(m1, m2, check_existing=True).items] == ["already"] * 2
    assert {f: (env.dest.root / f).stat().st_mtime_ns for f in files(env.dest)} == before


def test_check_existing_recopies_a_wrong_object_left_before_the_manifest(env: Env) -> None:
    (m1,) = env.chain()[:1]
    db = next(o for o in m1.objects if o.source == "db")
    env.dest.put(db.key, BytesReader(raw_bytes(env.raw, db.key)))
    flip_a_byte(env.dest, db.key)
    item = env.copy(m1, check_existing=True).items[0]
    assert (item.status, item.objects_copied, item.objects_skipped) == ("copied", 2, 0)
    assert raw_bytes(env.dest, db.key) == raw_bytes(env.raw, db.key)
    assert env.dest.extended == []  # re-copied, not skipped: it carries a new retention


def test_dry_run_with_check_existing_reads_but_writes_nothing(env: Env) -> None:
    (m1,) = env.chain()[:1]
    env.copy(m1)
    db = next(o for o in m1.objects if o.source == "db")
    flip_a_byte(env.dest, db.key)
    damaged = raw_bytes(env.dest, db.key)
    item = env.copy(m1, check_existing=True, dry_run=True).items[0]
    assert (item.status, item.objects_copied, item.objects_checked) == ("would copy", 1, 2)
    assert raw_bytes(env.dest, db.key) == damaged


class LosesPut(StorageWrapper):
    """Puts of *key* report success and store nothing (something deletes it at once)."""

    def __init__(self, inner: LocalStorage, key: str) -> None:
        super().__init__(inner)
        self.key = key

    def put(
        self, key: str, src: Readable, *, size_hint: int | None = None, if_absent: bool = False
    ) -> ObjectInfo:
        info = self.inner.put(key, src, size_hint=size_hint, if_absent=if_absent)
        if key == self.key:
            self.inner.delete(key)
        return info


def test_manifest_is_not_written_when_an_object_is_gone_from_the_copy(env: Env) -> None:
    (m1,) = env.chain()[:1]
    db = next(o for o in m1.objects if o.source == "db")
    item = env.copy(m1, dest=LosesPut(env.dest, db.key)).items[0]
    assert item.status == "failed" and isinstance(item.exc, IntegrityError)
    assert db.key in str(item.error) and "is missing" in str(item.error)
    key = layout.manifest_key("box", m1.id)
    assert env.dest.head(key) is None
    assert env.dest.head(layout.signature_key(key)) is None
    # the next run, where nothing deletes it, completes the copy
    assert env.copy(m1).items[0].status == "copied"


class AnotherRunWrites(StorageWrapper):
    """Before the first put of a data object, another manifest (and its
    signature) under the same key appears: a run this one raced with."""

    def __init__(self, inner: LocalStorage, key: str, manifest: bytes, sig: bytes) -> None:
        super().__init__(inner)
        self.key, self.manifest, self.sig = key, manifest, sig
        self.done = False

    def put(
        self, key: str, src: Readable, *, size_hint: int | None = None, if_absent: bool = False
    ) -> ObjectInfo:
        if not self.done and key.startswith("data/"):
            self.done = True
            self.inner.put(layout.signature_key(self.key), BytesReader(self.sig))
            self.inner.put(self.key, BytesReader(self.manifest))
        return self.inner.put(key, src, size_hint=size_hint, if_absent=if_absent)


def test_the_signature_of_a_manifest_already_there_is_never_replaced(env: Env) -> None:
    (m1,) = env.chain()[:1]
    key = layout.manifest_key("box", m1.id)
    theirs, their_sig = b'{"another": "manifest"}', b"their signature"
    dest = AnotherRunWrites(env.dest, key, theirs, their_sig)
    item = env.copy(m1, dest=dest).items[0]
    assert item.status == "failed" and isinstance(item.exc, IntegrityError)
    assert key in str(item.error)
    assert raw_bytes(env.dest, key) == theirs
    assert raw_bytes(env.dest, layout.signature_key(key)) == their_sig


def test_a_signature_left_without_its_manifest_is_kept_only_if_identical(env: Env) -> None:
    m1, m2 = env.chain()
    # a copy killed between the signature and the manifest: the same bytes, completed
    k1 = layout.manifest_key("box", m1.id)
    env.dest.put(
        layout.signature_key(k1), BytesReader(raw_bytes(env.raw, layout.signature_key(k1)))
    )
    assert env.copy(m1).items[0].status == "copied"
    assert raw_bytes(env.dest, k1) == raw_bytes(env.raw, k1)
    # another signature there: refused, left as it is, and no manifest next to it
    k2 = layout.manifest_key("box", m2.id)
    env.dest.put(layout.signature_key(k2), BytesReader(b"another signature"))
    item = env.copy(m2).items[0]
    assert item.status == "failed" and isinstance(item.exc, IntegrityError)
    assert layout.signature_key(k2) in str(item.error)
    assert raw_bytes(env.dest, layout.signature_key(k2)) == b"another signature"
    assert env.dest.head(k2) is None


def put_lock_info(
    store: LocalStorage, owner_id: str, pid: int, machine: str, age: timedelta
) -> None:
    info = {
        "owner": f"root@{machine}",
        "machine": machine,
        "pid": pid,
        "host": "box",
        "time": (datetime.now(UTC) - age).isoformat(),
        "snapshot_id": owner_id,
    }
    store.put(layout.lock_key("box"), BytesReader(json.dumps(info).encode()))


def test_an_old_copy_lock_is_not_taken_over_while_its_process_may_live(env: Env) -> None:
    (m1,) = env.chain()[:1]
    here = socket.gethostname()
    old = lock.STALE_AFTER + timedelta(hours=1)
    for pid, machine in (
        (os.getpid(), here),  # alive on this machine, only old
        (dead_pid(), "another-machine"),  # its pid says nothing here
    ):
        put_lock_info(env.dest, "copy", pid, machine, old)
        before = raw_bytes(env.dest, layout.lock_key("box"))
        item = env.copy(m1).items[0]
        assert item.status == "failed" and isinstance(item.exc, LockError), machine
        assert not isinstance(item.exc, LockHeldError)
        assert "--break-lock" in (item.exc.hint or "")
        assert raw_bytes(env.dest, layout.lock_key("box")) == before
        assert env.dest.head(layout.manifest_key("box", m1.id)) is None
    # --break-lock takes it over
    assert env.copy(m1, break_lock=True).items[0].status == "copied"
    assert env.dest.head(layout.lock_key("box")) is None


def test_release_leaves_a_lock_of_another_machine_with_the_same_pid(env: Env) -> None:
    held = lock.acquire(env.dest, "box", "copy")
    # broken meanwhile, and taken by a copy on another machine that has the same pid
    theirs = {**asdict(held), "machine": "other", "owner": "root@other"}
    env.dest.put(layout.lock_key("box"), BytesReader(json.dumps(theirs).encode()))
    lock.release(env.dest, "box", held)
    assert lock.holder(env.dest, "box") == lock.LockInfo(**theirs)
    env.dest.delete(layout.lock_key("box"))
    held = lock.acquire(env.dest, "box", "copy")
    lock.release(env.dest, "box", held)
    assert lock.holder(env.dest, "box") is None


def test_take_over_replaces_only_the_lock_it_was_given(env: Env) -> None:
    put_lock_info(env.dest, "copy", dead_pid(), socket.gethostname(), timedelta(0))
    judged = lock.holder(env.dest, "box")
    assert judged is not None and lock.process_gone(judged)
    put_lock_info(env.dest, "copy", os.getpid(), socket.gethostname(), timedelta(0))
    with pytest.raises(LockHeldError):  # another copy took it over meanwhile
        lock.take_over(env.dest, "box", "copy", judged)
    assert lock.holder(env.dest, "box") != judged
