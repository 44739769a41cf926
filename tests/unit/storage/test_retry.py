"""vkbackup.retry: classification, bounded backoff with jitter, logging, re-raise."""

from __future__ import annotations

import errno
import logging
from typing import Any

import botocore.exceptions
import pytest

from vkbackup import retry
from vkbackup.retry import RetryPolicy, backoff_delay, describe_error, is_transient


def client_error(code: str, status: int, op: str = "PutObject") -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} message"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        op,
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SlowDown", 503),
        ("ServiceUnavailable", 503),
        ("InternalError", 500),
        ("502", 502),
        ("GatewayTimeout", 504),
        ("TooManyRequests", 429),
        ("RequestTimeout", 400),
        ("Throttling", 400),
        ("ConditionalRequestConflict", 409),
        ("WhoKnows", 500),
    ],
)
def test_transient_client_errors(code: str, status: int) -> None:
    assert is_transient(client_error(code, status))


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDenied", 403),
        ("NoSuchKey", 404),
        ("NoSuchBucket", 404),
        ("PreconditionFailed", 412),
        ("BadDigest", 400),
        ("InvalidAccessKeyId", 403),
        ("SignatureDoesNotMatch", 403),
    ],
)
def test_permanent_client_errors(code: str, status: int) -> None:
    assert not is_transient(client_error(code, status))


@pytest.mark.parametrize(
    "exc",
    [
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
        botocore.exceptions.ResponseStreamingError(error="reset"),
        botocore.exceptions.IncompleteReadError(actual_bytes=1, expected_bytes=2),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        BrokenPipeError(errno.EPIPE, "Broken pipe"),
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        TimeoutError("timed out"),
    ],
)
def test_transient_network_errors(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("x"),
        FileNotFoundError(errno.ENOENT, "nope"),
        PermissionError(errno.EACCES, "denied"),
        botocore.exceptions.NoCredentialsError(),
        KeyboardInterrupt(),
    ],
)
def test_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_any_of_combines_predicates() -> None:
    pred = retry.any_of(is_transient, lambda e: isinstance(e, KeyError))
    assert pred(KeyError("k"))
    assert pred(TimeoutError())
    assert not pred(ValueError())


def test_backoff_is_bounded_growing_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=8.0)
    # the extremes of the jitter: rand()=0 gives d/2, rand()->1 gives d
    assert backoff_delay(1, policy, rand=lambda: 0.0) == 0.25
    assert backoff_delay(1, policy, rand=lambda: 1.0) == 0.5
    assert backoff_delay(3, policy, rand=lambda: 0.0) == 1.0
    assert backoff_delay(3, policy, rand=lambda: 1.0) == 2.0
    for attempt in range(1, 200):
        d = backoff_delay(attempt, policy)
        assert 0 < d <= 8.0
    assert backoff_delay(50, policy, rand=lambda: 0.0) == 4.0  # capped at max_delay/2..max_delay


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=5, max_delay=1)


def test_call_retries_transient_then_succeeds_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=4, base_delay=0.1, max_delay=1.0, sleep=sleeps.append)
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise client_error("SlowDown", 503)
        return "done"

    with caplog.at_level(logging.WARNING, logger="vkbackup.retry"):
        assert retry.call(flaky, "PutObject s3://b/k", policy) == "done"
    assert calls["n"] == 3
    assert len(sleeps) == 2
    assert 0.05 <= sleeps[0] <= 0.1
    assert 0.1 <= sleeps[1] <= 0.2
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0].startswith("PutObject s3://b/k: SlowDown (HTTP 503); retry 1/3 in ")
    assert "retry 2/3" in msgs[1]


def test_call_gives_up_after_max_attempts_with_original_error() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.01, sleep=sleeps.append)
    calls = {"n": 0}

    def down() -> None:
        calls["n"] += 1
        raise client_error("InternalError", 500)

    with pytest.raises(botocore.exceptions.ClientError) as info:
        retry.call(down, "x", policy)
    assert info.value.response["Error"]["Code"] == "InternalError"
    assert calls["n"] == 3
    assert len(sleeps) == 2


def test_call_does_not_retry_permanent_errors() -> None:
    calls = {"n": 0}

    def denied() -> None:
        calls["n"] += 1
        raise client_error("AccessDenied", 403)

    with pytest.raises(botocore.exceptions.ClientError):
        retry.call(denied, "x", RetryPolicy(sleep=lambda s: None))
    assert calls["n"] == 1


def test_max_attempts_one_never_retries() -> None:
    calls: list[Any] = []

    def down() -> None:
        calls.append(1)
        raise TimeoutError()

    with pytest.raises(TimeoutError):
        retry.call(down, "x", RetryPolicy(max_attempts=1, sleep=lambda s: None))
    assert len(calls) == 1


def test_describe_error() -> None:
    assert describe_error(client_error("SlowDown", 503)) == "SlowDown (HTTP 503)"
    assert describe_error(ConnectionResetError(104, "Connection reset by peer")) == (
        "ConnectionResetError: [Errno 104] Connection reset by peer"
    )
    assert describe_error(TimeoutError()) == "TimeoutError"
