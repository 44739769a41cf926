"""S3Storage under faults, against the real server: injected 500/503/SlowDown
(botocore before-send handlers) and connections cut by a TCP proxy."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable

import pytest

from tests.integration.storage.inject import Injector
from tests.integration.storage.test_s3 import PART, Chunked, open_uploads, raw_keys, sha_of, storage
from tests.integration.tcpproxy import TcpProxy
from tests.lab.s3 import S3Server
from vkbackup.config.model import StorageConfig
from vkbackup.errors import StorageError
from vkbackup.retry import RetryPolicy
from vkbackup.streams import BytesReader

Cfg = Callable[..., StorageConfig]


def part_no(n: int) -> Callable[[str], bool]:
    return lambda url: f"partNumber={n}&" in url or url.endswith(f"partNumber={n}")


@pytest.mark.parametrize(
    ("status", "code"), [(500, "InternalError"), (503, "SlowDown"), (503, "ServiceUnavailable")]
)
def test_injected_part_errors_are_retried(
    s3_server: S3Server,
    s3_bucket: str,
    s3_config: Cfg,
    fast_retry: RetryPolicy,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: str,
) -> None:
    store = storage(s3_config(s3_bucket), fast_retry)
    inj = Injector(store.client)
    inj.fail("UploadPart", status, code, times=2, when=part_no(2))
    inj.fail("CompleteMultipartUpload", status, code, times=1)
    src = Chunked(3 * PART + 99)
    with caplog.at_level(logging.WARNING, logger="vkbackup.retry"):
        info = store.put("data/retried.age", src)
    assert inj.injected == 3
    assert inj.seen["UploadPart"] == 4 + 2
    assert inj.seen["CompleteMultipartUpload"] == 2
    assert info.size == src.sent
    assert sha_of(store, "data/retried.age") == src.sha.hexdigest()
    warnings = [r.getMessage() for r in caplog.records]
    assert sum(f"part 2: {code} (HTTP {status}); retry" in m for m in warnings) == 2
    assert any(m.startswith("CompleteMultipartUpload") for m in warnings)
    assert open_uploads(s3_server, s3_bucket) == []


def test_injected_errors_on_small_put_and_reads(
    s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    store = storage(s3_config(s3_bucket), fast_retry)
    inj = Injector(store.client)
    inj.fail("PutObject", 503, "SlowDown", times=3)
    inj.fail("GetObject", 500, "InternalError", times=1)
    inj.fail("ListObjectsV2", 502, "BadGateway", times=1)
    inj.fail("HeadObject", 504, "GatewayTimeout", times=1)
    store.put("k", BytesReader(b"payload"))
    assert inj.seen["PutObject"] == 4
    with store.open("k") as f:
        assert f.read() == b"payload"
    assert [o.key for o in store.list()] == ["k"]
    head = store.head("k")
    assert head is not None and head.size == 7


def test_permanent_failure_aborts_cleanly(
    s3_server: S3Server, s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    store = storage(s3_config(s3_bucket), fast_retry)
    inj = Injector(store.client)
    inj.fail("UploadPart", 503, "SlowDown", times=100, when=part_no(3))
    src = Chunked(5 * PART)
    with pytest.raises(StorageError) as info:
        store.put("data/doomed.age", src)
    msg = str(info.value)
    assert f"s3://{s3_bucket}/data/doomed.age" in msg and "SlowDown" in msg
    assert inj.seen["UploadPart"] >= 2 + fast_retry.max_attempts
    assert inj.seen["AbortMultipartUpload"] == 1
    assert raw_keys(s3_server, s3_bucket) == []
    assert open_uploads(s3_server, s3_bucket) == []
    assert src.sent <= 5 * PART  # read at most part 3 and the one after it


def test_complete_failure_aborts_cleanly(
    s3_server: S3Server, s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    store = storage(s3_config(s3_bucket), fast_retry)
    inj = Injector(store.client)
    inj.fail("CompleteMultipartUpload", 500, "InternalError", times=100)
    with pytest.raises(StorageError, match="CompleteMultipartUpload"):
        store.put("data/doomed.age", Chunked(PART + 1))
    assert raw_keys(s3_server, s3_bucket) == []
    assert open_uploads(s3_server, s3_bucket) == []


def test_connection_cut_during_part_upload(
    s3_server: S3Server, s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    with TcpProxy(port) as proxy:
        store = storage(s3_config(s3_bucket, endpoint_url=proxy.endpoint), fast_retry)
        store.put("warmup", BytesReader(b"x"))
        # cut twice: in the middle of part 1's body, then in the middle of a later part
        proxy.cut_after(up=PART // 2, times=2)
        src = Chunked(3 * PART + 5)
        info = store.put("data/cut.age", src)
        assert proxy.cuts == 2
    direct = storage(s3_config(s3_bucket), fast_retry)
    assert info.size == src.sent
    assert sha_of(direct, "data/cut.age") == src.sha.hexdigest()
    assert open_uploads(s3_server, s3_bucket) == []


def test_connection_cut_during_download_resumes(
    s3_server: S3Server, s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy
) -> None:
    direct = storage(s3_config(s3_bucket), fast_retry)
    data = os.urandom(3 * PART)
    direct.put("data/dl.age", BytesReader(data))
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    with TcpProxy(port) as proxy:
        store = storage(s3_config(s3_bucket, endpoint_url=proxy.endpoint), fast_retry)
        f = store.open("data/dl.age")
        proxy.cut_after(down=4 * 1024 * 1024, times=2)
        h = hashlib.sha256()
        while chunk := f.read(256 * 1024):
            h.update(chunk)
        f.close()
        assert proxy.cuts == 2
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()


def test_outage_mid_upload_fails_with_hint_and_reports_leftover(
    s3_server: S3Server,
    s3_bucket: str,
    s3_config: Cfg,
    fast_retry: RetryPolicy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    with TcpProxy(port) as proxy:
        store = storage(s3_config(s3_bucket, endpoint_url=proxy.endpoint), fast_retry)

        def outage_at_part_2(request: object, **kw: object) -> None:
            if "partNumber=2" in str(getattr(request, "url", "")):
                proxy.refuse_all()

        store.client.meta.events.register("before-send.s3.UploadPart", outage_at_part_2)
        with (
            caplog.at_level(logging.ERROR, logger="vkbackup.storage.s3"),
            pytest.raises(StorageError) as info,
        ):
            store.put("data/outage.age", Chunked(3 * PART))
        assert "failed after 4 attempt(s)" in str(info.value)
        assert proxy.endpoint in (info.value.hint or "")
    # the abort could not reach the server either: nothing is visible, and the
    # open upload is logged and listed so prune (or a lifecycle rule) can remove it
    assert raw_keys(s3_server, s3_bucket) == []
    assert any("could not abort multipart upload" in r.getMessage() for r in caplog.records)
    direct = storage(s3_config(s3_bucket), fast_retry)
    leftovers = direct.list_incomplete_uploads()
    assert [k for k, _, _ in leftovers] == ["data/outage.age"]
    direct.abort_upload(leftovers[0][0], leftovers[0][1])
    assert open_uploads(s3_server, s3_bucket) == []
