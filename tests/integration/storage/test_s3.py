"""S3Storage against a real S3 server (SeaweedFS): streaming multipart, conditional
create, Object Lock, listing, incomplete uploads, errors that name bucket and key."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.lab.s3 import S3Server
from vkbackup.config.model import ObjectLock, StorageConfig
from vkbackup.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from vkbackup.retry import RetryPolicy
from vkbackup.storage import open_storage, s3_probes
from vkbackup.storage.parts import MIB
from vkbackup.storage.s3 import S3Storage, make_client, multipart_etag
from vkbackup.streams import BytesReader

PART = 5 * MIB


def storage(
    cfg: StorageConfig, policy: RetryPolicy, *, part_size: int = PART, **kw: Any
) -> S3Storage:
    assert cfg.bucket
    return S3Storage(
        make_client(cfg),
        cfg.bucket,
        cfg.prefix,
        object_lock=cfg.object_lock,
        part_size=part_size,
        policy=policy,
        endpoint_url=cfg.endpoint_url,
        **kw,
    )


class Chunked:
    """An unknown-length source: a generator of random chunks, hashed as it goes."""

    def __init__(self, size: int, fail_at: int | None = None) -> None:
        self.remaining = size
        self.sent = 0
        self.sha = hashlib.sha256()
        self.fail_at = fail_at

    def read(self, n: int = -1, /) -> bytes:
        if self.fail_at is not None and self.sent >= self.fail_at:
            raise RuntimeError("source died")
        n = min(n if n > 0 else 1 << 20, self.remaining, 200_000)
        data = os.urandom(n)
        self.remaining -= n
        self.sent += n
        self.sha.update(data)
        return data


def sha_of(store: S3Storage, key: str) -> str:
    h = hashlib.sha256()
    with store.open(key) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def raw_keys(server: S3Server, bucket: str) -> list[str]:
    resp = server.client().list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in resp.get("Contents", [])]


def open_uploads(server: S3Server, bucket: str) -> list[str]:
    return [
        u["Key"] for u in server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    ]


Cfg = Callable[..., StorageConfig]


def test_small_roundtrip_list_head_delete(
    s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    store = storage(s3_config(s3_bucket, prefix="vk/prod"), fast_retry)
    info = store.put("manifests/a.json", BytesReader(b'{"a": 1}'))
    assert info.size == 8 and info.etag == hashlib.md5(b'{"a": 1}').hexdigest()
    store.put("data/x/1.age", BytesReader(b"one"))
    store.put("data/x/2.age", BytesReader(b"two"))
    assert sorted(o.key for o in store.list("data/")) == ["data/x/1.age", "data/x/2.age"]
    assert len(list(store.list())) == 3
    head = store.head("data/x/2.age")
    assert head is not None and head.size == 3 and head.modified is not None
    with store.open("data/x/1.age") as f:
        assert f.read() == b"one"
    store.delete("data/x/1.age")
    store.delete("data/x/1.age")  # missing is fine
    assert store.head("data/x/1.age") is None
    with pytest.raises(ObjectNotFoundError, match=f"s3://{s3_bucket}/vk/prod/data/x/1.age"):
        store.open("data/x/1.age")
    assert store.retention_until("data/x/2.age") is None


def test_multipart_stream_of_unknown_length(
    s3_server: S3Server, s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    store = storage(s3_config(s3_bucket), fast_retry)
    src = Chunked(4 * PART + 1234567)
    info = store.put("data/big.age", src)
    assert info.size == src.sent
    assert sha_of(store, "data/big.age") == src.sha.hexdigest()
    head = store.head("data/big.age")
    assert head is not None and head.size == src.sent
    assert head.etag is not None and head.etag.endswith("-5")  # five parts
    assert open_uploads(s3_server, s3_bucket) == []


def test_multipart_etag_matches_server(
    s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    store = storage(s3_config(s3_bucket), fast_retry)
    data = os.urandom(2 * PART + 10)
    info = store.put("k", BytesReader(data))
    digests = [hashlib.md5(data[i : i + PART]).digest() for i in range(0, len(data), PART)]
    assert info.etag == multipart_etag(digests)
    head = store.head("k")
    assert head is not None and head.etag == multipart_etag(digests)


def test_if_absent_on_real_server(s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy) -> None:
    store = storage(s3_config(s3_bucket), fast_retry)
    store.put("locks/prod", BytesReader(b"holder-1"), if_absent=True)
    with pytest.raises(ObjectExistsError, match=f"s3://{s3_bucket}/locks/prod"):
        store.put("locks/prod", BytesReader(b"holder-2"), if_absent=True)
    with store.open("locks/prod") as f:
        assert f.read() == b"holder-1"
    data = os.urandom(PART + 100)
    store.put("big", BytesReader(data), if_absent=True)
    with pytest.raises(ObjectExistsError):
        store.put("big", BytesReader(os.urandom(PART + 100)), if_absent=True)
    assert store.list_incomplete_uploads() == []
    with store.open("big") as f:
        assert f.read() == data


def test_source_failure_leaves_nothing(
    s3_server: S3Server, s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    store = storage(s3_config(s3_bucket), fast_retry)
    with pytest.raises(RuntimeError, match="source died"):
        store.put("data/broken.age", Chunked(5 * PART, fail_at=2 * PART + 7))
    assert raw_keys(s3_server, s3_bucket) == []
    assert open_uploads(s3_server, s3_bucket) == []


def test_incomplete_uploads_listed_and_aborted(
    s3_server: S3Server, s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    store = storage(s3_config(s3_bucket, prefix="vk"), fast_retry)
    client = s3_server.client()
    up = client.create_multipart_upload(Bucket=s3_bucket, Key="vk/data/crashed.age")["UploadId"]
    client.create_multipart_upload(Bucket=s3_bucket, Key="other/not-ours")
    ups = store.list_incomplete_uploads()
    assert [(k, u) for k, u, _ in ups] == [("data/crashed.age", up)]
    assert isinstance(ups[0][2], datetime)
    store.abort_upload("data/crashed.age", up)
    assert store.list_incomplete_uploads() == []
    assert open_uploads(s3_server, s3_bucket) == ["other/not-ours"]


def test_object_lock_retention_and_locked_delete(
    s3_server: S3Server, s3_lock_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    cfg = s3_config(s3_lock_bucket, object_lock=ObjectLock(mode="governance", days=1))
    store = storage(cfg, fast_retry)
    assert s3_probes.object_lock_status(store).enabled
    assert s3_probes.versioning_status(store) == "Enabled"
    before = datetime.now(UTC)
    store.put("data/small.age", BytesReader(b"locked bytes"))
    big = os.urandom(2 * PART + 3)
    store.put("data/big.age", BytesReader(big))
    for key in ("data/small.age", "data/big.age"):
        until = store.retention_until(key)
        assert until is not None
        assert before + timedelta(days=1) - timedelta(minutes=5) <= until
        assert until <= datetime.now(UTC) + timedelta(days=1, minutes=5)
    # deleting the locked version itself is refused; the data stays readable
    assert s3_probes.probe_locked_delete(store, "data/small.age") is True
    client = s3_server.client()
    versions = client.list_object_versions(Bucket=s3_lock_bucket, Prefix="data/")["Versions"]
    assert sorted(v["Key"] for v in versions) == ["data/big.age", "data/small.age"]
    for v in versions:
        with pytest.raises(client.exceptions.ClientError):
            client.delete_object(Bucket=s3_lock_bucket, Key=v["Key"], VersionId=v["VersionId"])
    with store.open("data/big.age") as f:
        assert f.read() == big


def test_lock_bucket_without_lock_config_has_no_retention(
    s3_lock_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    store = storage(s3_config(s3_lock_bucket), fast_retry)
    store.put("k", BytesReader(b"x"))
    assert store.retention_until("k") is None


def test_missing_bucket_error_names_it(s3_config: Cfg, fast_retry: RetryPolicy) -> None:
    store = storage(s3_config("no-such-bucket-vk"), fast_retry)
    with pytest.raises(StorageError) as info:
        store.put("a/b", BytesReader(b"x"))
    assert "s3://no-such-bucket-vk/a/b" in str(info.value)
    assert "NoSuchBucket" in str(info.value)
    assert info.value.hint and "bucket" in info.value.hint
    with pytest.raises(StorageError, match="bucket does not exist"):
        s3_probes.check_bucket(store)


def test_wrong_secret_error(s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy) -> None:
    store = storage(s3_config(s3_bucket, secret_access_key="wrong-secret-0123456789"), fast_retry)
    with pytest.raises(StorageError) as info:
        store.put("k", BytesReader(b"x"))
    assert "SignatureDoesNotMatch" in str(info.value) and f"s3://{s3_bucket}/k" in str(info.value)
    assert "secret_access_key" in (info.value.hint or "")


def test_open_storage_from_config(s3_bucket: str, s3_config: Cfg) -> None:
    store = open_storage(s3_config(s3_bucket, prefix="p", part_size_mib=5, max_attempts=2))
    store.put("x", BytesReader(os.urandom(PART + 1)))
    head = store.head("x")
    assert head is not None and head.size == PART + 1
    assert [o.key for o in store.list()] == ["x"]


def test_checksum_probe(s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy) -> None:
    store = storage(s3_config(s3_bucket), fast_retry)
    probe = s3_probes.probe_checksums(store, "_probe/checksum")
    assert probe.md5_accepted and probe.bad_md5_rejected and probe.crc32_accepted, probe
    with store.open("_probe/checksum") as f:
        assert f.read() == b"vkbackup checksum probe\n"


def test_reused_object_retention_is_extended_never_shortened(
    s3_lock_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    day = storage(s3_config(s3_lock_bucket, object_lock=ObjectLock("governance", 1)), fast_retry)
    day.put("data/reused.age", BytesReader(b"an object a later snapshot references"))
    first = day.retention_until("data/reused.age")
    assert first is not None
    # a later snapshot under a 3-day policy references it: it is kept 3 days from now
    three = storage(s3_config(s3_lock_bucket, object_lock=ObjectLock("governance", 3)), fast_retry)
    until = three.extend_retention("data/reused.age")
    assert until is not None and until > first + timedelta(days=1, hours=23)
    stored = three.retention_until("data/reused.age")
    assert stored is not None and abs((stored - until).total_seconds()) < 2
    # a shorter policy never shortens it
    assert day.extend_retention("data/reused.age") == stored
    assert day.retention_until("data/reused.age") == stored
    # without object_lock there is nothing to extend
    assert storage(s3_config(s3_lock_bucket), fast_retry).extend_retention("data/x") is None
