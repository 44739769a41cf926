"""Snapshot and restore through a real fault-injecting HTTP proxy in front of
SeaweedFS (tests/integration/s3fault.py). Unlike test_s3_snapshot_faults.py,
whose errors are made up inside botocore before a request leaves, here every
fault happens on the wire, after boto3 sent the request:

- the server gets half of a part's (or a single PUT's) body, then its connection
  is reset, while the client gets 500/503/SlowDown;
- the server stores the object, and its answer is lost (connection closed);
- a GET fails, or is cut mid-body.

The snapshot is vkbackup's real one (run_snapshot of this machine through
LocalTransport: tar, zstd or gzip, age, S3Storage, manifest last, host lock), and
the restore is vkbackup's real files step (plan from the manifest, preflight, each
object streamed storage -> size+sha256 -> age -> tar guard -> `tar -x` at /) onto
this machine, after the originals were moved away. Each test asserts the promise
of vkbackup/storage/s3.py and vkbackup/retry.py: a transient fault is retried
(at most max_attempts tries) and the run completes, or the run fails naming
s3://bucket/key and the error; that the faults really fired; that the bucket
holds exactly the snapshot (no half-written object, no open multipart upload,
no lock); and that the restored bytes equal the originals.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import quote

import boto3
import botocore.config
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.integration.reliability.conftest import MIB, Box, make_box
from tests.integration.s3fault import S3FaultProxy
from tests.integration.storage.test_s3 import PART, open_uploads, raw_keys, storage
from tests.lab.s3 import S3Server
from tests.unpack import local_tar_name
from vkbackup import catalog, layout
from vkbackup.actions.snapshot import SnapshotResult, run_snapshot
from vkbackup.actions.verify import run_verify
from vkbackup.config.model import HostConfig, StorageConfig
from vkbackup.errors import StorageError
from vkbackup.progress import Progress
from vkbackup.restore import runner
from vkbackup.restore.playbook import Playbook
from vkbackup.restore.session import build_plan
from vkbackup.restore.steps import FilesParams, StepContext
from vkbackup.retry import RetryPolicy
from vkbackup.sources import files
from vkbackup.storage.s3 import S3Storage
from vkbackup.streams import BytesReader
from vkbackup.transport.local import LocalTransport

Cfg = Callable[..., StorageConfig]
HOST = "box"
# fnmatch patterns of the keys a snapshot of the box writes
APP = "data/box/*/app/*"  # 16 MiB of random data: 4 parts (3 of 5 MiB, then ~1 MiB)
MID = "data/box/*/mid/*"  # 3 MiB: one PutObject
SECRETS = "data/box/*/secrets/*"  # the .env: one small PutObject
MANIFEST = "snapshots/box/*.json"
LOCK = "locks/box.lock"
# query strings (regex) of the S3 operations on a key
CREATE = r"(^|&)uploads(=|&|$)"
COMPLETE_OR_ABORT = r"(^|&)uploadId="
LIST = r"(^|&)list-type=2(&|$)"


def part(n: int) -> str:
    return rf"(^|&)partNumber={n}(&|$)"


def local(_: HostConfig) -> LocalTransport:
    return LocalTransport("local")


@pytest.fixture
def box(tmp_path: Path) -> Box:
    b = make_box(tmp_path, big_mib=16)
    with open(b.tree / "mid.bin", "wb") as f:
        f.write(os.urandom(3 * MIB))
    return b


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(s3_server.endpoint) as p:
        yield p
        assert p.errors == []  # the proxy itself framed every message it saw


def through(proxy: S3FaultProxy, s3_config: Cfg, bucket: str, policy: RetryPolicy) -> S3Storage:
    """vkbackup's S3 storage, talking to SeaweedFS through the proxy."""
    return storage(s3_config(bucket, endpoint_url=proxy.endpoint), policy, part_size=PART)


def snapshot(box: Box, store: S3Storage, only: tuple[str, ...] = ()) -> SnapshotResult:
    host = box.host(22, box.root / "kh", box.root / "key")
    host["sources"].append({"type": "files", "name": "mid", "paths": [str(box.tree / "mid.bin")]})
    if only:
        host["sources"] = [s for s in host["sources"] if s["name"] in only]
    return run_snapshot(box.config(host), HOST, storage=store, connect=local)


def originals(box: Box, only: tuple[str, ...] = ()) -> dict[Path, bytes]:
    paths = {"app": box.big, "mid": box.tree / "mid.bin", "secrets": box.env_file}
    return {p: p.read_bytes() for name, p in paths.items() if not only or name in only}


def move_aside(box: Box, only: tuple[str, ...] = ()) -> dict[Path, bytes]:
    """Move the originals out of the way (a restore's preflight refuses to overwrite
    them); return their bytes."""
    before = originals(box, only)
    aside = box.root / "aside"
    aside.mkdir(exist_ok=True)
    for p in before:
        shutil.move(p, aside / p.name)
    return before


def restore(store: S3Storage, box: Box, snapshot_id: str) -> StepContext:
    """vkbackup's restore of the snapshot's files onto this machine: the plan from the
    manifest, its preflight, then its files steps, each object streamed storage ->
    size+sha256 -> age -> tar guard -> `tar -x` at /. (run_plan itself would keep
    its resume state in /var/lib on this machine, so the steps are called here.)"""
    ident = [box.ident]
    _, plan = build_plan(store, snapshot_id, ident, Playbook(), HOST)
    plan = plan.only(tuple(s.id for s in plan.steps if isinstance(s.params, FilesParams)))
    assert plan.steps[0].kind == "preflight" and {s.kind for s in plan.steps[1:]} == {"files"}
    ctx = StepContext(
        LocalTransport("target"), store, ident, snapshot_id, Progress(enabled=False), []
    )
    assert runner.preflight(ctx, plan.steps[0], runner.Run(plan, "127.0.0.1")) == "target is empty"
    for step in plan.steps[1:]:
        files.restore_files(ctx, step)
    # size and sha256 matched, age authenticated, tar headers checked: for every object
    assert len(ctx.verified) == len(plan.steps) - 1
    assert all("tar headers checked" in v for v in ctx.verified)
    return ctx


def restore_in_place(store: S3Storage, box: Box, snapshot_id: str) -> dict[Path, bytes]:
    """Move the originals aside, restore the snapshot, return what each original path
    holds now."""
    before = move_aside(box)
    restore(store, box, snapshot_id)
    return {p: p.read_bytes() for p in before}


def assert_only_the_snapshot(s3_server: S3Server, bucket: str, r: SnapshotResult) -> None:
    """The bucket holds the manifest and exactly the objects it lists, each with the
    size and sha256 it records: nothing half-written, no open upload, no lock."""
    assert r.status == "complete", r.to_json()
    client = s3_server.client()
    m = catalog.load_manifest(storage_direct(s3_server, bucket), HOST, r.id)
    assert sorted(raw_keys(s3_server, bucket)) == sorted(
        [layout.manifest_key(HOST, r.id)] + [o.key for o in m.objects]
    )
    for o in m.objects:
        body = client.get_object(Bucket=bucket, Key=o.key)["Body"].read()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (o.size, o.sha256), o.key
    assert open_uploads(s3_server, bucket) == []


def statuses(proxy: S3FaultProxy, method: str, key: str, query: str | None = None) -> list[int]:
    """The server's answers to the requests matching method, key pattern and query."""
    return [
        e.status if e.status is not None else -1
        for e in proxy.events
        if e.method == method
        and fnmatch(e.key, key)
        and (query is None or re.search(query, e.query))
    ]


def storage_direct(s3_server: S3Server, bucket: str) -> S3Storage:
    return S3Storage(s3_server.client(), bucket, policy=RetryPolicy(max_attempts=1))


# -- the proxy itself -------------------------------------------------------------------


def chunked_put(
    proxy: S3FaultProxy, s3_server: S3Server, bucket: str, key: str, data: bytes
) -> tuple[int, bytes]:
    """A SigV4-signed PutObject sent by hand as HTTP/1.1 chunked with a trailer and
    Expect: 100-continue (what boto3 sends over https), through the proxy."""
    path = f"/{bucket}/{quote(key)}"
    req = AWSRequest(
        "PUT",
        proxy.endpoint + path,
        data=data,
        headers={"Transfer-Encoding": "chunked", "Expect": "100-continue"},
    )
    creds = Credentials(s3_server.access_key, s3_server.secret_key)
    S3SigV4Auth(creds, "s3", s3_server.region).add_auth(req)
    head = f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in req.headers.items()
    )
    body = b"".join(
        b"%x\r\n%s\r\n" % (len(data[i : i + 70_000]), data[i : i + 70_000])
        for i in range(0, len(data), 70_000)
    )
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n")
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body + b"0\r\nx-vkbackup-trailer: 1\r\n\r\n")
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, resp.read()


def test_proxy_forwards_faithfully(
    s3_server: S3Server,
    s3_bucket: str,
    s3_config: Cfg,
    fast_retry: RetryPolicy,
    proxy: S3FaultProxy,
) -> None:
    """Without faults the proxy changes nothing: a chunked body with a trailer after
    100-continue, boto3's defaults (Expect: 100-continue on a file body) and
    vkbackup's requests (Content-MD5, multipart, resumed ranges) pass, signatures
    check, and connections are kept alive. A fault on a chunked upload is a proper
    S3 error, and the server keeps nothing of it."""
    data = os.urandom(300_000)
    assert chunked_put(proxy, s3_server, s3_bucket, "chunked key", data)[0] == 200
    fault = proxy.fail("PUT", "chunked key", 503, "SlowDown")
    # a small chunked body: the server gets all its data but never its last chunk
    status, err = chunked_put(proxy, s3_server, s3_bucket, "chunked key", os.urandom(10_000))
    assert status == 503 and b"<Code>SlowDown</Code>" in err and b"<Key>chunked key</Key>" in err
    direct = s3_server.client()
    assert direct.get_object(Bucket=s3_bucket, Key="chunked key")["Body"].read() == data
    assert [(e.chunked, e.expect, e.action) for e in proxy.events] == [
        (True, True, "pass"),
        (True, True, "fail 503 SlowDown"),
    ]
    assert fault.server_got[0] > 10_000  # data and chunk framing, not the end
    proxy.clear()
    default = boto3.client(
        "s3",
        endpoint_url=proxy.endpoint,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name=s3_server.region,
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    data = os.urandom(3 * MIB + 7)
    default.put_object(Bucket=s3_bucket, Key="odd name/ü+x", Body=io.BytesIO(data))
    put = proxy.events[-1]
    assert (put.method, put.key, put.expect) == ("PUT", "odd name/ü+x", True)
    got = default.get_object(Bucket=s3_bucket, Key="odd name/ü+x", Range="bytes=5-")
    assert got["Body"].read() == data[5:]
    store = through(proxy, s3_config, s3_bucket, fast_retry)
    big = os.urandom(2 * PART + 3)
    store.put("big", BytesReader(big))
    with store.open("big") as f:
        assert f.read() == big
    assert [o.key for o in store.list()] == ["big", "chunked key", "odd name/ü+x"]
    assert proxy.faults == 1
    # PUT GET | Create, 3 UploadPart, Complete, GET | LIST: kept alive on few connections
    assert len(proxy.events) == 2 + 9 and proxy.connections <= 2 + 3


# -- snapshots through faults ---------------------------------------------------------


def test_500_mid_part_and_mid_single_put_are_retried(
    s3_server: S3Server,
    s3_bucket: str,
    s3_config: Cfg,
    fast_retry: RetryPolicy,
    proxy: S3FaultProxy,
    box: Box,
) -> None:
    part2 = proxy.fail("PUT", APP, 500, "InternalError", query=part(2))
    last = proxy.fail("PUT", APP, 500, "InternalError", query=part(4), after=1)
    single = proxy.fail("PUT", MID, 500, "InternalError", times=2)
    r = snapshot(box, through(proxy, s3_config, s3_bucket, fast_retry))
    assert r.status == "complete", r.to_json()
    # each fault fired, and the retry that followed reached the server
    assert (part2.fired, part2.matched) == (1, 2)
    assert (last.fired, last.matched) == (1, 2)
    assert (single.fired, single.matched) == (2, 3)
    # the server got part of each body before its connection was reset
    assert part2.server_got == [PART // 2] and last.server_got == [1]
    assert len(single.server_got) == 2 and all(0 < n < 2 * MIB for n in single.server_got)
    assert_only_the_snapshot(s3_server, s3_bucket, r)
    want = originals(box)
    assert restore_in_place(storage_direct(s3_server, s3_bucket), box, r.id) == want


def test_503_slowdown_on_every_kind_of_request_is_retried(
    s3_server: S3Server,
    s3_bucket: str,
    s3_config: Cfg,
    fast_retry: RetryPolicy,
    proxy: S3FaultProxy,
    box: Box,
) -> None:
    rules = [
        proxy.fail("PUT", LOCK, 503, "SlowDown"),
        proxy.fail("GET", "", 503, "SlowDown", query=LIST, times=2),
        proxy.fail("POST", APP, 503, "SlowDown", query=CREATE),
        proxy.fail("PUT", APP, 503, "SlowDown", query=part(3), times=3),  # the 4th try passes
        proxy.fail("POST", APP, 503, "SlowDown", query=COMPLETE_OR_ABORT),
        proxy.fail("PUT", SECRETS, 503, "SlowDown"),
        proxy.fail("PUT", MANIFEST, 503, "SlowDown", times=2),
        proxy.fail("DELETE", LOCK, 503, "SlowDown"),
    ]
    r = snapshot(box, through(proxy, s3_config, s3_bucket, fast_retry))
    assert r.status == "complete", r.to_json()
    assert [rule.fired for rule in rules] == [rule.times for rule in rules]
    assert proxy.faults == sum(rule.times for rule in rules) == 12
    assert_only_the_snapshot(s3_server, s3_bucket, r)
    want = originals(box)
    assert restore_in_place(storage_direct(s3_server, s3_bucket), box, r.id) == want


@pytest.mark.parametrize(
    ("source", "pattern", "query", "status", "code"),
    [
        ("app", APP, part(3), 503, "SlowDown"),
        ("mid", MID, None, 500, "InternalError"),
    ],
    ids=["multipart-part", "single-put"],
)
def test_permanent_fault_fails_naming_the_key_and_leaves_nothing(
    s3_server: S3Server,
    s3_bucket: str,
    s3_config: Cfg,
    fast_retry: RetryPolicy,
    proxy: S3FaultProxy,
    box: Box,
    source: str,
    pattern: str,
    query: str | None,
    status: int,
    code: str,
) -> None:
    """Every try answered with an error mid-body: exactly max_attempts tries, then the
    source fails with an error naming s3://bucket/key and the S3 code; the multipart
    upload is aborted; no object, manifest or lock remains; the next run succeeds."""
    fault = proxy.fail("PUT", pattern, status, code, query=query, times=10_000)
    aborts = proxy.count("DELETE", pattern, query=COMPLETE_OR_ABORT)
    r = snapshot(box, through(proxy, s3_config, s3_bucket, fast_retry), only=(source,))
    assert r.status == "failed" and r.manifest_key is None, r.to_json()
    err = r.sources[0].error or ""
    name = local_tar_name()
    key = layout.object_key(HOST, r.id, source, name)
    assert f"s3://{s3_bucket}/{key}" in err and f"{code} (HTTP {status})" in err, err
    assert fault.fired == fast_retry.max_attempts
    assert aborts.matched == (1 if source == "app" else 0)
    assert len(fault.server_got) == fast_retry.max_attempts and min(fault.server_got) > 0
    assert raw_keys(s3_server, s3_bucket) == []
    assert open_uploads(s3_server, s3_bucket) == []
    proxy.clear()  # the server recovers: the next run through the proxy succeeds
    again = snapshot(box, through(proxy, s3_config, s3_bucket, fast_retry), only=(source,))
    assert_only_the_snapshot(s3_server, s3_bucket, again)


def test_responses_lost_after_the_server_stored_the_object(
    s3_server: S3Server,
    s3_bucket: str,
    s3_config: Cfg,
    fast_retry: RetryPolicy,
    proxy: S3FaultProxy,
    box: Box,
) -> None:
    """Every write is done by the server, then its answer is lost. The retry overwrites
    with the same bytes (PutObject, UploadPart, CompleteMultipartUpload), or meets 412
    under If-None-Match (the lock, the manifest) and recognises its own object by
    ETag and size; the delete of the lock is repeated. The manifest lists exactly
    the stored objects, each with its true size and sha256."""
    rules = [
        proxy.drop("PUT", LOCK),  # If-None-Match: the retry meets 412
        proxy.drop("PUT", APP, query=part(2)),
        proxy.drop("POST", APP, query=COMPLETE_OR_ABORT),
        proxy.drop("PUT", MID),
        proxy.drop("PUT", SECRETS),
        proxy.drop("PUT", MANIFEST),  # If-None-Match: the retry meets 412
        proxy.drop("DELETE", LOCK),
    ]
    r = snapshot(box, through(proxy, s3_config, s3_bucket, fast_retry))
    assert r.status == "complete", r.to_json()
    assert [(rule.fired, rule.matched) for rule in rules] == [(1, 2)] * len(rules)
    # what the server answered each time (the first answer of each pair was lost)
    assert statuses(proxy, "PUT", LOCK) == [200, 412]
    assert statuses(proxy, "PUT", MANIFEST) == [200, 412]
    assert statuses(proxy, "PUT", MID) == statuses(proxy, "PUT", SECRETS) == [200, 200]
    assert statuses(proxy, "PUT", APP, part(2)) == [200, 200]
    assert statuses(proxy, "POST", APP, COMPLETE_OR_ABORT) == [200, 200]
    assert statuses(proxy, "DELETE", LOCK) == [204, 204]
    assert_only_the_snapshot(s3_server, s3_bucket, r)
    m = catalog.load_manifest(storage_direct(s3_server, s3_bucket), HOST, r.id)
    assert sorted(o.source for o in m.objects) == ["app", "mid", "secrets"]
    want = originals(box)
    assert restore_in_place(storage_direct(s3_server, s3_bucket), box, r.id) == want


def test_lost_create_multipart_answer_leaves_no_open_upload(
    s3_server: S3Server,
    s3_bucket: str,
    s3_config: Cfg,
    fast_retry: RetryPolicy,
    proxy: S3FaultProxy,
    box: Box,
) -> None:
    """The server opens a multipart upload but its answer (the UploadId) is lost: the
    retry opens a second one. The first, whose id vkbackup never learnt, must not be
    left open (`storage check` would report a leftover after a clean snapshot)."""
    create = proxy.drop("POST", APP, query=CREATE)
    aborts = proxy.count("DELETE", APP, query=COMPLETE_OR_ABORT)
    r = snapshot(box, through(proxy, s3_config, s3_bucket, fast_retry))
    assert r.status == "complete", r.to_json()
    assert (create.fired, create.matched) == (1, 2)
    assert aborts.matched == 1  # vkbackup aborted the upload it never got the id of
    assert_only_the_snapshot(s3_server, s3_bucket, r)


# -- restore through faults -----------------------------------------------------------


def test_restore_and_verify_through_get_faults(
    s3_server: S3Server,
    s3_bucket: str,
    s3_config: Cfg,
    fast_retry: RetryPolicy,
    proxy: S3FaultProxy,
    box: Box,
) -> None:
    """GETs fail (500, SlowDown), lose their answer, or are cut mid-body: the reader
    retries the open, resumes a cut body at its offset (Range + If-Match), and the
    restored bytes equal the originals; verify through the same faults finds nothing."""
    store = through(proxy, s3_config, s3_bucket, fast_retry)
    r = snapshot(box, store)
    assert_only_the_snapshot(s3_server, s3_bucket, r)
    rules = [
        proxy.fail("GET", MANIFEST, 503, "SlowDown"),
        proxy.fail("GET", APP, 500, "InternalError"),
        proxy.drop("GET", APP, nth=2, body_bytes=MIB + 3),  # cut mid-body: resumed there
        proxy.drop("GET", APP, nth=3, body_bytes=4 * MIB),  # the resumed GET, cut again
        proxy.drop("GET", MID),
        proxy.fail("GET", SECRETS, 503, "SlowDown"),
    ]
    gets = proxy.count("GET", APP)
    want = originals(box)
    assert restore_in_place(store, box, r.id) == want
    assert all(rule.fired == 1 for rule in rules), [(x.action, x.fired) for x in rules]
    # 500, cut at MIB + 3, resumed there and cut again 4 MiB later, resumed to the end
    assert gets.matched == 4
    app_gets = [e for e in proxy.events if e.method == "GET" and fnmatch(e.key, APP)]
    assert [e.range for e in app_gets] == [None, None, f"bytes={MIB + 3}-", f"bytes={5 * MIB + 3}-"]
    proxy.clear()
    proxy.drop("GET", APP, body_bytes=2 * MIB)
    proxy.fail("GET", MID, 503, "SlowDown")
    results = run_verify(store, [(HOST, r.id)], identities=[box.ident], record=False)
    assert [(v.id, v.bad) for v in results] == [(r.id, [])]
    assert proxy.faults == 2 + len(rules)


def test_permanent_get_fault_fails_the_restore_naming_the_key(
    s3_server: S3Server,
    s3_bucket: str,
    s3_config: Cfg,
    fast_retry: RetryPolicy,
    proxy: S3FaultProxy,
    box: Box,
) -> None:
    """Every GET of the object fails: after max_attempts tries the restore's files step
    fails with an error naming s3://bucket/key and the S3 code, and writes nothing.
    Once the storage answers again, the same restore completes, byte-identical."""
    store = through(proxy, s3_config, s3_bucket, fast_retry)
    r = snapshot(box, store, only=("app",))
    assert_only_the_snapshot(s3_server, s3_bucket, r)
    key = layout.object_key(HOST, r.id, "app", local_tar_name())
    fault = proxy.fail("GET", APP, 500, "InternalError", times=10_000)
    want = move_aside(box, only=("app",))
    with pytest.raises(StorageError) as info:
        restore(store, box, r.id)
    assert f"s3://{s3_bucket}/{key}: GetObject failed: InternalError (HTTP 500)" in str(info.value)
    assert fault.fired == fast_retry.max_attempts
    assert not box.big.exists()
    proxy.clear()
    restore(store, box, r.id)
    assert {box.big: box.big.read_bytes()} == want
