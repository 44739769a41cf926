"""`vkbackup copy` between two buckets of a real S3 server (SeaweedFS): the copy
bucket has Object Lock, so every copied object carries the copy's retention,
an object skipped as already there has it extended, and a damaged source
object aborts its multipart upload: nothing becomes visible in the copy."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.lab.s3 import S3Server
from tests.unit.actions.builders import SnapshotBuilder
from vkbackup import catalog, layout
from vkbackup.actions.copy import run_copy
from vkbackup.config.model import ObjectLock, StorageConfig
from vkbackup.crypto import generate_identity
from vkbackup.errors import IntegrityError
from vkbackup.signed_storage import SignedStorage
from vkbackup.signing import Trust
from vkbackup.storage import open_storage
from vkbackup.storage.base import Storage

Cfg = Callable[..., StorageConfig]
T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def body(store: Storage, key: str) -> bytes:
    with store.open(key) as f:
        return f.read()


def setup(s3_bucket: str, s3_lock_bucket: str, s3_config: Cfg) -> dict[str, Any]:
    k = Ed25519PrivateKey.generate()
    trust = Trust(key=k, trusted=(k.public_key(),))
    primary = open_storage(s3_config(s3_bucket, prefix="vk", part_size_mib=5))
    copy_cfg = s3_config(s3_lock_bucket, object_lock=ObjectLock("governance", 2), part_size_mib=5)
    return {
        "trust": trust,
        "raw": primary,
        "source": SignedStorage(primary, trust),
        "dest": open_storage(copy_cfg),
    }


def test_copy_into_an_object_lock_bucket(
    s3_bucket: str, s3_lock_bucket: str, s3_config: Cfg
) -> None:
    e = setup(s3_bucket, s3_lock_bucket, s3_config)
    b = SnapshotBuilder(e["source"], "box", [generate_identity().recipient()])
    big = os.urandom(11 * 1024 * 1024)  # three parts of 5 MiB: a multipart upload
    m1 = b.snapshot(T0, new={"img": big, "db": b"dump 1"})
    img = next(o for o in m1.objects if o.source == "img")
    m2 = b.snapshot(T0 + timedelta(days=1), new={"db": b"dump 2"}, reuse={"img": [img]})
    before = datetime.now(UTC)
    result = run_copy(e["source"], {"offsite": e["dest"]}, [("box", m1.id), ("box", m2.id)])
    assert result.failure() is None, result.to_json()
    assert [(i.objects_copied, i.objects_skipped) for i in result.items] == [(2, 0), (1, 1)]
    dest: Storage = e["dest"]
    for m in (m1, m2):
        key = layout.manifest_key("box", m.id)
        for k in (key, layout.signature_key(key), *(o.key for o in m.objects)):
            assert body(dest, k) == body(e["raw"], k), k
        for o in m.objects:
            until = dest.retention_until(o.key)
            assert until is not None and until >= before + timedelta(days=2, minutes=-5)
    copy = SignedStorage(dest, e["trust"])
    assert catalog.resolve(copy, "latest", "box").id == m2.id
    assert dest.list_incomplete_uploads() == []


def test_damaged_source_object_leaves_nothing_in_the_copy(
    s3_server: S3Server, s3_bucket: str, s3_lock_bucket: str, s3_config: Cfg
) -> None:
    e = setup(s3_bucket, s3_lock_bucket, s3_config)
    b = SnapshotBuilder(e["source"], "box", [generate_identity().recipient()])
    m = b.snapshot(T0, new={"img": os.urandom(11 * 1024 * 1024)})
    (img,) = m.objects
    damaged = bytearray(body(e["raw"], img.key))
    damaged[-100] ^= 0x01  # in the last part: the first parts are uploaded before it shows
    s3_server.client().put_object(Bucket=s3_bucket, Key=f"vk/{img.key}", Body=bytes(damaged))
    result = run_copy(e["source"], {"offsite": e["dest"]}, [("box", m.id)])
    item = result.items[0]
    assert item.status == "failed" and isinstance(item.exc, IntegrityError)
    assert img.key in str(item.error)
    dest: Storage = e["dest"]
    assert dest.head(img.key) is None
    assert dest.head(layout.manifest_key("box", m.id)) is None
    assert dest.list_incomplete_uploads() == []
    assert [i.key for i in dest.list("data/")] == []


def test_check_existing_recopies_a_damaged_object_into_the_object_lock_bucket(
    s3_server: S3Server, s3_bucket: str, s3_lock_bucket: str, s3_config: Cfg
) -> None:
    e = setup(s3_bucket, s3_lock_bucket, s3_config)
    b = SnapshotBuilder(e["source"], "box", [generate_identity().recipient()])
    m = b.snapshot(T0, new={"img": os.urandom(64 * 1024), "db": b"dump"})
    assert run_copy(e["source"], {"offsite": e["dest"]}, [("box", m.id)]).failure() is None
    img = next(o for o in m.objects if o.source == "img")
    dest: Storage = e["dest"]
    damaged = bytearray(body(dest, img.key))
    damaged[10] ^= 0x01  # same size: a copy that trusts sizes keeps it
    s3_server.client().put_object(Bucket=s3_lock_bucket, Key=img.key, Body=bytes(damaged))
    assert body(dest, img.key) == bytes(damaged)
    trusted = run_copy(e["source"], {"offsite": dest}, [("box", m.id)])
    assert trusted.items[0].status == "already"
    checked = run_copy(e["source"], {"offsite": dest}, [("box", m.id)], check_existing=True)
    assert checked.failure() is None, checked.to_json()
    item = checked.items[0]
    assert (item.status, item.objects_copied, item.objects_checked) == ("repaired", 1, 2)
    assert body(dest, img.key) == body(e["raw"], img.key)
    until = dest.retention_until(img.key)
    assert until is not None and until > datetime.now(UTC) + timedelta(days=1)
