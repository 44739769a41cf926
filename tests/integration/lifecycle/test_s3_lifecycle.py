"""verify and prune against a real S3 server (SeaweedFS, started by the
integration conftest on free ports; not the lab): Object Lock keeps dropped
snapshots until their retention ends, stale multipart uploads are aborted,
and a damaged object is named."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tests.lab.s3 import S3Server
from tests.unit.actions.builders import SnapshotBuilder
from vkbackup import catalog
from vkbackup.actions.prune import prune_host
from vkbackup.actions.verify import run_verify, select_snapshots
from vkbackup.config.model import ObjectLock, RetentionConfig, StorageConfig
from vkbackup.crypto import X25519Identity, generate_identity
from vkbackup.manifest import Manifest
from vkbackup.retry import RetryPolicy
from vkbackup.storage.base import Storage
from vkbackup.storage.s3 import S3Storage, make_client
from vkbackup.streams import BytesReader

Cfg = Callable[..., StorageConfig]
KEEP_ONE = RetentionConfig(keep_last=1)


def s3(cfg: StorageConfig, policy: RetryPolicy) -> S3Storage:
    assert cfg.bucket
    return S3Storage(
        make_client(cfg),
        cfg.bucket,
        cfg.prefix,
        object_lock=cfg.object_lock,
        policy=policy,
        endpoint_url=cfg.endpoint_url,
    )


def three(storage: Storage) -> tuple[list[Manifest], X25519Identity]:
    ident = generate_identity()
    b = SnapshotBuilder(storage, "box", [ident.recipient()])
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    m1 = b.snapshot(t0, new={"img": b"image", "db": b"dump 1"})
    img = next(o for o in m1.objects if o.source == "img")
    m2 = b.snapshot(t0 + timedelta(days=1), new={"db": b"dump 2"}, reuse={"img": [img]})
    m3 = b.snapshot(t0 + timedelta(days=2), new={"db": b"dump 3"}, reuse={"img": [img]})
    return [m1, m2, m3], ident


def test_object_lock_holds_dropped_snapshots_until_retention_ends(
    s3_lock_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    cfg = s3_config(s3_lock_bucket, object_lock=ObjectLock(mode="governance", days=1))
    store = s3(cfg, fast_retry)
    (m1, m2, m3), _ = three(store)
    now = datetime.now(UTC)
    hp = prune_host(store, "box", KEEP_ONE, now=now)
    assert hp.plan.kept_ids == {m1.id, m2.id, m3.id}
    for m in (m1, m2):
        reason = hp.plan.decision(m.id).reasons[0]
        assert reason.startswith("under Object Lock until ")
    assert hp.deleted == []
    assert len(catalog.list_snapshots(store, "box")) == 3
    # a day and a bit later the retention is over: the policy applies
    later = now + timedelta(days=1, hours=1)
    hp = prune_host(store, "box", KEEP_ONE, now=later)
    assert hp.plan.dropped_ids == {m1.id, m2.id}
    assert hp.failed == []
    assert catalog.list_snapshots(store, "box") == [("box", m3.id)]
    assert all(store.head(o.key) is not None for o in m3.objects)
    assert store.head(next(o for o in m1.objects if o.source == "db").key) is None


def test_verify_and_prune_on_s3(
    s3_server: S3Server, s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    store = s3(s3_config(s3_bucket), fast_retry)
    (_, _, m3), ident = three(store)
    results = run_verify(
        store,
        select_snapshots(store, all_=True),
        identities=[ident],
    )
    assert [r.ok for r in results] == [True, True, True]
    assert results[2].shared == 1  # the image, read once
    # damage m3's own dump: overwrite it with other bytes
    dump3 = next(o for o in m3.objects if o.source == "db")
    store.put(dump3.key, BytesReader(b"not what was uploaded"))
    [res] = run_verify(store, [("box", m3.id)], identities=[ident])
    [bad] = res.bad
    assert bad.key == dump3.key and bad.problem == "size"
    # a multipart upload left by a crashed run, and prune a day later
    client = s3_server.client()
    up = client.create_multipart_upload(Bucket=s3_bucket, Key="data/box/crashed/x.age")
    hp = prune_host(store, "box", KEEP_ONE, now=datetime.now(UTC) + timedelta(days=1, hours=1))
    assert hp.plan.kept_ids == {m3.id}
    assert [k for k, _ in hp.aborted_uploads] == ["data/box/crashed/x.age"]
    assert store.list_incomplete_uploads() == []
    assert up["UploadId"]
    assert catalog.list_snapshots(store, "box") == [("box", m3.id)]
    records = sorted(i.key for i in store.list("verify/"))
    assert records == [f"verify/box/{m3.id}.json"]
