"""A whole snapshot into a real S3 server (SeaweedFS) while it answers 500/503/
SlowDown in bursts (botocore before-send handlers, tests/integration/storage/inject.py):
the snapshot completes and its content is identical; when the failure is permanent,
the run aborts cleanly: no manifest, no object, no open multipart upload, no lock."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.reliability.conftest import Box, make_box
from tests.integration.storage.inject import Injector
from tests.integration.storage.test_s3 import PART, open_uploads, raw_keys, storage
from tests.lab.s3 import S3Server
from tests.unpack import local_tar_name, stock_open
from vkbackup import catalog, layout
from vkbackup.actions.snapshot import run_snapshot
from vkbackup.config.model import HostConfig, StorageConfig
from vkbackup.retry import RetryPolicy
from vkbackup.transport.local import LocalTransport

Cfg = Callable[..., StorageConfig]


def local(_: HostConfig) -> LocalTransport:
    return LocalTransport("local")


@pytest.fixture
def small_box(tmp_path: Path) -> Box:
    return make_box(tmp_path, big_mib=24)  # 5 parts of 5 MiB (random data: gzip keeps it)


def part(n: int) -> Callable[[str], bool]:
    return lambda url: f"partNumber={n}&" in url or url.endswith(f"partNumber={n}")


def test_snapshot_completes_through_bursts_of_s3_errors(
    s3_server: S3Server, s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy, small_box: Box
) -> None:
    box = small_box
    store = storage(s3_config(s3_bucket), fast_retry, part_size=PART)
    inj = Injector(store.client)
    inj.fail("PutObject", 503, "SlowDown", times=2)  # the lock, the small object, the manifest
    inj.fail("CreateMultipartUpload", 503, "ServiceUnavailable", times=1)
    inj.fail("UploadPart", 503, "SlowDown", times=3, when=part(2))
    inj.fail("UploadPart", 500, "InternalError", times=2, when=part(4))
    inj.fail("CompleteMultipartUpload", 500, "InternalError", times=1)
    inj.fail("ListObjectsV2", 503, "SlowDown", times=2)
    inj.fail("HeadObject", 500, "InternalError", times=1)
    inj.fail("DeleteObject", 503, "SlowDown", times=1)  # releasing the lock
    cfg = box.config(box.host(22, box.root / "kh", box.root / "key"))
    r = run_snapshot(cfg, "box", storage=store, connect=local)
    assert r.status == "complete", r.to_json()
    assert inj.injected >= 10
    assert inj.seen["UploadPart"] >= 5 + 5
    # identical content, read back from the server, decrypted by stock age
    m = catalog.load_manifest(store, "box", r.id)
    assert [s for s in catalog.list_snapshots(store, "box")] == [("box", r.id)]
    got: dict[str, bytes] = {}
    for obj in m.objects:
        plain = stock_open(store, obj, box.identity_path)
        with tarfile.open(fileobj=io.BytesIO(plain)) as tf:
            for member in tf.getmembers():
                f = tf.extractfile(member)
                assert f is not None
                got["/" + member.name] = f.read()
    assert got == {str(box.big): box.big.read_bytes(), str(box.env_file): box.env_file.read_bytes()}
    assert open_uploads(s3_server, s3_bucket) == []
    assert store.head(layout.lock_key("box")) is None


def test_permanent_s3_failure_aborts_cleanly(
    s3_server: S3Server, s3_bucket: str, s3_config: Cfg, fast_retry: RetryPolicy, small_box: Box
) -> None:
    box = small_box
    store = storage(s3_config(s3_bucket), fast_retry, part_size=PART)
    inj = Injector(store.client)
    inj.fail("UploadPart", 503, "SlowDown", times=10_000, when=part(3))
    host = box.host(22, box.root / "kh", box.root / "key")
    host["sources"] = [s for s in host["sources"] if s["name"] == "app"]
    cfg = box.config(host)
    r = run_snapshot(cfg, "box", storage=store, connect=local)
    assert r.status == "failed" and r.manifest_key is None
    err = r.sources[0].error or ""
    key = layout.object_key("box", r.id, "app", local_tar_name())
    assert f"s3://{s3_bucket}/{key}" in err and "SlowDown" in err, err
    assert inj.seen["AbortMultipartUpload"] == 1
    assert raw_keys(s3_server, s3_bucket) == []  # no object, no manifest, no lock
    assert open_uploads(s3_server, s3_bucket) == []
    assert store.list_incomplete_uploads() == []
    # the server recovers: the next run succeeds
    inj.rules.clear()
    assert run_snapshot(cfg, "box", storage=store, connect=local).status == "complete"
