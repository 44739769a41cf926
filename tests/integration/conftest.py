"""Fixtures shared by integration tests: a real S3 server (SeaweedFS) per test session.

s3_server        session: `weed mini` started by tests.lab.s3 in a temp dir on
                 free non-default ports (never the lab's 8333), stopped at the end.
                 $VKBACKUP_TEST_S3_PORT pins the S3 port.
s3_bucket        a fresh empty bucket per test
s3_lock_bucket   a fresh Object Lock (so versioned) bucket per test
s3_config(bucket, **overrides) -> StorageConfig   for that server
fast_retry       a RetryPolicy with millisecond backoff (tests stay fast)
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.lab import s3 as lab_s3
from vkbackup.config.model import StorageConfig
from vkbackup.retry import RetryPolicy


def _free_s3_port() -> int:
    pinned = os.environ.get("VKBACKUP_TEST_S3_PORT")
    if pinned:
        return int(pinned)
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(20000, 30000, 10)
        if all(lab_s3._port_free(p) for p in lab_s3.ports(base).values()):
            return base
    raise RuntimeError("no free port range for the test S3 server")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_s3.S3Server]:
    data_dir = tmp_path_factory.mktemp("seaweedfs")
    server = lab_s3.start(data_dir, s3_port=_free_s3_port(), wait=90)
    try:
        yield server
    finally:
        lab_s3.stop(server)


def _new_bucket(server: lab_s3.S3Server, *, object_lock: bool) -> str:
    name = f"t-{secrets.token_hex(6)}"
    lab_s3.ensure_bucket(server, name, object_lock=object_lock)
    return name


@pytest.fixture
def s3_bucket(s3_server: lab_s3.S3Server) -> str:
    return _new_bucket(s3_server, object_lock=False)


@pytest.fixture
def s3_lock_bucket(s3_server: lab_s3.S3Server) -> str:
    return _new_bucket(s3_server, object_lock=True)


@pytest.fixture
def s3_config(s3_server: lab_s3.S3Server) -> Callable[..., StorageConfig]:
    def make(bucket: str, **overrides: Any) -> StorageConfig:
        args: dict[str, Any] = {
            "type": "s3",
            "bucket": bucket,
            "endpoint_url": s3_server.endpoint,
            "region": s3_server.region,
            "addressing_style": "path",
            "access_key_id": s3_server.access_key,
            "secret_access_key": s3_server.secret_key,
        }
        args.update(overrides)
        return StorageConfig(**args)

    return make


@pytest.fixture
def fast_retry() -> RetryPolicy:
    return RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)
