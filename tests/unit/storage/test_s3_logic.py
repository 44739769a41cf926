"""S3Storage upload/download logic against an in-memory fake client.

The real-server behaviour is covered by tests/integration/storage; here the
fake lets each branch be forced: part boundaries, bounded buffering, aborts,
retries of buffered requests, lost responses, resumed reads.
"""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import UTC, datetime, timedelta

import botocore.exceptions
import pytest

from tests.unit.storage.fake_s3 import FakeS3, client_error
from vkbackup.config.model import ObjectLock, StorageConfig
from vkbackup.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from vkbackup.retry import RetryPolicy
from vkbackup.storage import open_storage, s3
from vkbackup.storage.parts import MIB
from vkbackup.storage.s3 import S3Storage, make_client, multipart_etag
from vkbackup.streams import BytesReader

PART = 5 * MIB
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class CountingReader:
    """A Readable over bytes that counts what was consumed (and can fail after N bytes)."""

    def __init__(self, data: bytes, fail_at: int | None = None) -> None:
        self._r = BytesReader(data)
        self.consumed = 0
        self._fail_at = fail_at
        self.lock = threading.Lock()

    def read(self, n: int = -1, /) -> bytes:
        if self._fail_at is not None and self.consumed >= self._fail_at:
            raise RuntimeError("source died")
        data = self._r.read(n)
        with self.lock:
            self.consumed += len(data)
        return data


def make(fake: FakeS3, **kw: object) -> S3Storage:
    args: dict[str, object] = {
        "part_size": PART,
        "policy": RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.002),
        "clock": lambda: NOW,
    }
    args.update(kw)
    return S3Storage(fake, "bkt", "pre/fix", **args)  # type: ignore[arg-type]


def test_small_object_is_one_put_with_md5() -> None:
    fake = FakeS3()
    info = make(fake).put("a/b", BytesReader(b"hello"))
    assert fake.ops() == ["PutObject"]
    kw = fake.calls[0][1]
    assert kw["Bucket"] == "bkt" and kw["Key"] == "pre/fix/a/b"
    assert kw["ContentLength"] == 5
    assert "IfNoneMatch" not in kw and "ObjectLockMode" not in kw
    assert fake.objects["pre/fix/a/b"] == b"hello"
    assert info.size == 5 and info.etag == hashlib.md5(b"hello").hexdigest()


def test_empty_object() -> None:
    fake = FakeS3()
    assert make(fake).put("e", BytesReader(b"")).size == 0
    assert fake.objects["pre/fix/e"] == b""


def test_multipart_parts_sizes_and_content() -> None:
    fake = FakeS3()
    data = os.urandom(3 * PART + PART // 2)
    info = make(fake).put("big", BytesReader(data))
    parts = [kw for op, kw in fake.calls if op == "UploadPart"]
    assert [p["PartNumber"] for p in parts] == [1, 2, 3, 4]
    assert [p["ContentLength"] for p in parts] == [PART, PART, PART, PART // 2]
    assert fake.ops()[0] == "CreateMultipartUpload"
    assert fake.ops()[-1] == "CompleteMultipartUpload"
    assert fake.objects["pre/fix/big"] == data
    assert info.size == len(data)
    digests = [hashlib.md5(data[i : i + PART]).digest() for i in range(0, len(data), PART)]
    assert info.etag == multipart_etag(digests)


def test_exactly_one_part_size() -> None:
    fake = FakeS3()
    data = os.urandom(PART)
    make(fake).put("x", BytesReader(data))
    assert [op for op in fake.ops() if op == "UploadPart"] == ["UploadPart"]
    assert fake.objects["pre/fix/x"] == data


def test_exact_multiple_of_part_size() -> None:
    fake = FakeS3()
    data = os.urandom(2 * PART)
    make(fake).put("x", BytesReader(data))
    assert [kw["ContentLength"] for op, kw in fake.calls if op == "UploadPart"] == [PART, PART]
    assert fake.objects["pre/fix/x"] == data


def test_buffering_is_bounded_to_two_parts() -> None:
    fake = FakeS3()
    data = os.urandom(6 * PART + 123)
    src = CountingReader(data)
    uploaded = {"bytes": 0}
    worst = {"ahead": 0}

    buffers: set[int] = set()

    def on_part(kw: dict[str, object]) -> None:
        buffers.add(id(kw["Body"]))
        ahead = src.consumed - uploaded["bytes"]
        worst["ahead"] = max(worst["ahead"], ahead)
        uploaded["bytes"] += int(kw["ContentLength"])  # type: ignore[call-overload]

    fake.hooks["UploadPart"] = on_part
    make(fake).put("big", src)
    assert fake.objects["pre/fix/big"] == data
    # never more than the part being sent plus the one being filled
    assert 0 < worst["ahead"] <= 2 * PART
    assert len(buffers) == 2  # two part buffers, recycled


def test_object_lock_headers_on_put_and_create() -> None:
    fake = FakeS3()
    store = make(fake, object_lock=ObjectLock(mode="compliance", days=30))
    store.put("small", BytesReader(b"x"))
    store.put("big", BytesReader(os.urandom(PART + 1)))
    until = NOW + timedelta(days=30)
    for op in ("PutObject", "CreateMultipartUpload"):
        kw = next(kw for o, kw in fake.calls if o == op)
        assert kw["ObjectLockMode"] == "COMPLIANCE"
        assert kw["ObjectLockRetainUntilDate"] == until
    for op, kw in fake.calls:
        if op in ("PutObject", "UploadPart"):
            assert kw["ContentMD5"]


def test_source_error_aborts_and_propagates() -> None:
    fake = FakeS3()
    src = CountingReader(os.urandom(4 * PART), fail_at=2 * PART + 10)
    with pytest.raises(RuntimeError, match="source died"):
        make(fake).put("big", src)
    assert "CompleteMultipartUpload" not in fake.ops()
    assert fake.ops()[-1] == "AbortMultipartUpload"
    assert fake.uploads == {}
    assert "pre/fix/big" not in fake.objects


def test_keyboard_interrupt_aborts() -> None:
    fake = FakeS3()

    class Interrupt:
        n = 0

        def read(self, n: int = -1, /) -> bytes:
            self.n += 1
            if self.n > 8:
                raise KeyboardInterrupt
            return b"x" * n

    with pytest.raises(KeyboardInterrupt):
        make(fake).put("big", Interrupt())
    assert fake.ops()[-1] == "AbortMultipartUpload"
    assert fake.uploads == {}


def test_permanent_part_failure_aborts_with_named_error() -> None:
    fake = FakeS3()
    fake.fail["UploadPart"] = [None, client_error("AccessDenied", 403, "UploadPart")]
    with pytest.raises(StorageError) as info:
        make(fake).put("big", BytesReader(os.urandom(3 * PART)))
    msg = str(info.value)
    assert "s3://bkt/pre/fix/big" in msg and "AccessDenied" in msg and "403" in msg
    assert info.value.hint
    assert fake.ops()[-1] == "AbortMultipartUpload"
    assert fake.uploads == {}


def test_transient_part_failures_are_retried() -> None:
    fake = FakeS3()
    fake.fail["UploadPart"] = [
        None,
        client_error("SlowDown", 503, "UploadPart"),
        botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"),
        None,
    ]
    data = os.urandom(3 * PART)
    make(fake).put("big", BytesReader(data))
    numbers = [kw["PartNumber"] for op, kw in fake.calls if op == "UploadPart"]
    assert numbers == [1, 2, 2, 2, 3]
    assert fake.objects["pre/fix/big"] == data
    assert "AbortMultipartUpload" not in fake.ops()


def test_retries_are_bounded_then_abort() -> None:
    fake = FakeS3()
    fake.fail["UploadPart"] = [client_error("InternalError", 500, "UploadPart")] * 10
    with pytest.raises(StorageError, match="InternalError"):
        make(fake).put("big", BytesReader(os.urandom(2 * PART)))
    assert fake.ops().count("UploadPart") == 4  # max_attempts
    assert fake.uploads == {}


def test_single_put_retried_whole() -> None:
    fake = FakeS3()
    fake.fail["PutObject"] = [client_error("ServiceUnavailable", 503, "PutObject")]
    make(fake).put("k", BytesReader(b"data"))
    assert fake.ops() == ["PutObject", "PutObject"]
    assert fake.objects["pre/fix/k"] == b"data"


def test_if_absent_small_and_big() -> None:
    fake = FakeS3()
    store = make(fake)
    store.put("lock", BytesReader(b"me"), if_absent=True)
    assert fake.calls[-1][1]["IfNoneMatch"] == "*"
    with pytest.raises(ObjectExistsError, match="s3://bkt/pre/fix/lock"):
        store.put("lock", BytesReader(b"you"), if_absent=True)
    assert fake.objects["pre/fix/lock"] == b"me"
    store.put("big", BytesReader(os.urandom(PART + 5)), if_absent=True)
    with pytest.raises(ObjectExistsError):
        store.put("big", BytesReader(os.urandom(PART + 5)), if_absent=True)
    assert fake.ops()[-1] == "AbortMultipartUpload"
    assert fake.uploads == {}


def test_if_absent_lost_response_counts_as_success() -> None:
    fake = FakeS3()
    # the first PutObject lands but its response is lost; the retry meets 412
    fake.fail["PutObject:after"] = [botocore.exceptions.ConnectionClosedError(endpoint_url="x")]
    info = make(fake).put("lock", BytesReader(b"mine"), if_absent=True)
    assert info.size == 4
    assert fake.ops() == ["PutObject", "PutObject", "HeadObject"]


def test_if_absent_412_on_retry_for_someone_elses_object() -> None:
    fake = FakeS3()

    def someone_else_wins(kw: dict[str, object]) -> None:
        fake.objects["pre/fix/lock"] = b"theirs"
        fake.etags["pre/fix/lock"] = hashlib.md5(b"theirs").hexdigest()

    fake.fail["PutObject"] = [client_error("SlowDown", 503, "PutObject")]
    fake.hooks["HeadObject"] = lambda kw: None
    store = make(fake)
    fake.hooks["PutObject"] = lambda kw: (
        someone_else_wins(kw) if fake.ops().count("PutObject") == 1 else None
    )
    with pytest.raises(ObjectExistsError):
        store.put("lock", BytesReader(b"mine"), if_absent=True)
    assert fake.objects["pre/fix/lock"] == b"theirs"


def test_complete_lost_response_counts_as_success() -> None:
    fake = FakeS3()
    fake.fail["CompleteMultipartUpload:after"] = [
        botocore.exceptions.ReadTimeoutError(endpoint_url="x")
    ]
    data = os.urandom(2 * PART + 1)
    info = make(fake).put("big", BytesReader(data))
    assert fake.objects["pre/fix/big"] == data
    assert info.size == len(data)
    assert fake.ops()[-3:] == ["CompleteMultipartUpload", "CompleteMultipartUpload", "HeadObject"]
    assert "AbortMultipartUpload" not in fake.ops()


def test_too_many_parts_aborts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3, "MAX_PARTS", 3)
    fake = FakeS3()
    with pytest.raises(StorageError, match="larger than 3 parts") as info:
        make(fake).put("big", BytesReader(os.urandom(3 * PART + 1)))
    assert "size hint" in (info.value.hint or "")
    assert fake.uploads == {}


def test_size_hint_too_big_is_refused_before_reading() -> None:
    fake = FakeS3()
    src = CountingReader(b"abc")
    with pytest.raises(StorageError, match="does not fit"):
        make(fake).put("huge", src, size_hint=10**15)
    assert src.consumed == 0 and fake.calls == []


def test_read_resumes_at_offset_after_reset() -> None:
    fake = FakeS3()
    data = os.urandom(300_000)
    fake.objects["pre/fix/k"] = data
    fake.etags["pre/fix/k"] = hashlib.md5(data).hexdigest()
    fake.get_fail = [
        (100_000, botocore.exceptions.ResponseStreamingError(error="reset")),
        (50_000, ConnectionResetError(104, "reset")),
    ]
    with make(fake).open("k") as f:
        out = b"".join(iter(lambda: f.read(8192), b""))
    assert out == data
    gets = [kw for op, kw in fake.calls if op == "GetObject"]
    assert "Range" not in gets[0]
    assert gets[1]["Range"] == "bytes=100000-"
    assert gets[2]["Range"] == "bytes=150000-"
    assert all(g["IfMatch"] == f'"{fake.etags["pre/fix/k"]}"' for g in gets[1:])


def test_read_fails_if_object_changes() -> None:
    fake = FakeS3()
    fake.objects["pre/fix/k"] = b"a" * 1000
    fake.etags["pre/fix/k"] = "one"
    fake.get_fail = [(10, botocore.exceptions.ResponseStreamingError(error="reset"))]
    f = make(fake).open("k")
    assert f.read(10) == b"a" * 10
    fake.etags["pre/fix/k"] = "two"
    with pytest.raises(StorageError, match="changed while it was being read"):
        f.read(10)


def test_read_gives_up_after_max_attempts() -> None:
    fake = FakeS3()
    fake.objects["pre/fix/k"] = b"a" * 1000
    fake.etags["pre/fix/k"] = "e"
    err = botocore.exceptions.ResponseStreamingError(error="reset")
    fake.get_fail = [(0, err)] * 10
    f = make(fake).open("k")
    with pytest.raises(StorageError, match="s3://bkt/pre/fix/k"):
        f.read(10)
    assert fake.ops().count("GetObject") == 4


def test_missing_objects() -> None:
    fake = FakeS3()
    store = make(fake)
    with pytest.raises(ObjectNotFoundError, match="s3://bkt/pre/fix/nope"):
        store.open("nope")
    assert store.head("nope") is None
    store.delete("nope")
    with pytest.raises(ObjectNotFoundError):
        store.retention_until("nope")


def test_list_strips_prefix_and_paginates() -> None:
    fake = FakeS3()
    store = make(fake)
    for k in ("data/1", "data/2", "data/3", "man/1"):
        store.put(k, BytesReader(k.encode()))
    fake.objects["other/x"] = b"outside the prefix"
    assert [o.key for o in store.list("data/")] == ["data/1", "data/2", "data/3"]
    assert sorted(o.key for o in store.list()) == ["data/1", "data/2", "data/3", "man/1"]
    assert [kw["Prefix"] for op, kw in fake.calls if op == "ListObjectsV2"][-1] == "pre/fix/"


def test_incomplete_uploads_and_abort() -> None:
    fake = FakeS3()
    store = make(fake)
    up = fake.create_multipart_upload(Bucket="bkt", Key="pre/fix/data/x")["UploadId"]
    ups = store.list_incomplete_uploads()
    assert [(k, u) for k, u, _ in ups] == [("data/x", up)]
    store.abort_upload("data/x", up)
    assert store.list_incomplete_uploads() == []
    store.abort_upload("data/x", up)  # already gone: fine


def test_retention_none_without_lock() -> None:
    fake = FakeS3()
    store = make(fake)
    store.put("k", BytesReader(b"x"))
    assert store.retention_until("k") is None


def test_describe_and_bad_key() -> None:
    fake = FakeS3()
    assert make(fake).describe() == "s3://bkt/pre/fix"
    assert S3Storage(fake, "b").describe() == "s3://b"
    with pytest.raises(StorageError, match=r"'\.\.' segment"):
        make(fake).put("../x", BytesReader(b""))


def test_make_client_settings() -> None:
    cfg = StorageConfig(
        type="s3",
        bucket="bkt",
        endpoint_url="http://127.0.0.1:9",
        addressing_style="path",
        access_key_id="AKIDEXAMPLE",
        secret_access_key="not-a-real-secret-key",
    )
    client = make_client(cfg)
    conf = client.meta.config
    assert conf.request_checksum_calculation == "when_required"
    assert conf.response_checksum_validation == "when_required"
    assert conf.s3["addressing_style"] == "path"
    assert conf.retries["total_max_attempts"] == 1
    assert client.meta.region_name == "us-east-1"
    assert client.meta.endpoint_url == "http://127.0.0.1:9"


def test_open_storage_s3() -> None:
    cfg = StorageConfig(
        type="s3",
        bucket="bkt",
        prefix="vk",
        endpoint_url="http://127.0.0.1:9",
        region="eu-central",
        access_key_id="AKIDEXAMPLE",
        secret_access_key="not-a-real-secret-key",
        part_size_mib=8,
        max_attempts=3,
        object_lock=ObjectLock("governance", 7),
    )
    store = open_storage(cfg)
    assert isinstance(store, S3Storage)
    assert store.part_size == 8 * MIB
    assert store.policy.max_attempts == 3
    assert store.describe() == "s3://bkt/vk"
    assert store.client.meta.region_name == "eu-central"


def test_unknown_profile_is_a_storage_error() -> None:
    cfg = StorageConfig(type="s3", bucket="b", profile="no-such-profile-vkbackup-test")
    with pytest.raises(StorageError, match="no-such-profile"):
        make_client(cfg)


def test_no_credentials_is_a_named_storage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    store = S3Storage.from_config(
        StorageConfig(type="s3", bucket="bkt", endpoint_url="http://127.0.0.1:9", max_attempts=1)
    )
    with pytest.raises(StorageError) as info:
        store.head("k")
    assert "s3://bkt/k" in str(info.value) and "no S3 credentials" in str(info.value)
    assert info.value.hint and "access_key_id" in info.value.hint
