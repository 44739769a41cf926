"""The one retry policy: which failures are transient, how long to wait, how often.

Bounded exponential backoff with jitter, every retry logged. Built on tenacity;
any module that talks to something over a network reuses it (storage, SSH).

Only retry what can be repeated: a request whose whole body is in memory, or a
read that can resume at a known offset. Never wrap a call that consumes a
one-shot stream (the data already read would be lost).
"""

from __future__ import annotations

import http.client
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import botocore.exceptions
import tenacity

log = logging.getLogger("vkbackup.retry")

T = TypeVar("T")
Predicate = Callable[[BaseException], bool]

#: S3 (and S3-compatible) error codes that mean "try again later".
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "BadGateway",
        "GatewayTimeout",
        "ConditionalRequestConflict",
        "OperationAborted",
    }
)
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. *max_attempts* counts the first try: 1
    means "never retry". Raise ValueError for a count below 1 or bad delays."""

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError(f"bad delays: base {self.base_delay}, max {self.max_delay}")


def backoff_delay(
    attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random
) -> float:
    """Given the 1-based retry number, return the seconds to wait before it:
    "equal jitter", i.e. d/2 + uniform(0, d/2) with
    d = min(max_delay, base_delay * 2**(attempt-1)). Never above max_delay, and
    never zero unless base_delay is (no retry storms against a throttling server)."""
    exp = min(attempt - 1, 60)  # no float overflow on absurd attempt counts
    d = min(policy.max_delay, policy.base_delay * (2**exp))
    return float(d / 2 + rand() * d / 2)


def _client_error_code(exc: BaseException) -> tuple[str, int | None] | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    err = response.get("Error") or {}
    code = str(err.get("Code") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code, status if isinstance(status, int) else None


def is_transient(exc: BaseException) -> bool:
    """Given an exception, return True if repeating the same request may succeed:
    throttling and transient server or network failures (HTTP
    429/500/502/503/504; S3 codes in TRANSIENT_CODES; connection
    refused/reset/closed, broken pipe, timeouts, truncated responses). False for
    everything else (auth, not found, bad request)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code, status = _client_error_code(exc) or ("", None)
        if code in TRANSIENT_CODES:
            return True
        if status in TRANSIENT_STATUS:
            return True
        return code.isdigit() and int(code) in TRANSIENT_STATUS
    if isinstance(
        exc,
        botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError
        | botocore.exceptions.IncompleteReadError,
    ):
        return True
    # Built-in network failures: reset, refused, aborted, broken pipe, timeouts.
    return isinstance(exc, ConnectionError | TimeoutError | http.client.IncompleteRead)


def any_of(*predicates: Predicate) -> Predicate:
    """Return a predicate true when any of *predicates* is (to combine is_transient
    with a module's own transient test)."""

    def pred(exc: BaseException) -> bool:
        return any(p(exc) for p in predicates)

    return pred


def describe_error(exc: BaseException) -> str:
    """Return a short one-line description of *exc* for log lines and messages:
    "SlowDown (HTTP 503)", "ConnectionResetError: ..."."""
    info = _client_error_code(exc)
    if info is not None and info[0]:
        code, status = info
        return f"{code} (HTTP {status})" if status else code
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _retrying(what: str, policy: RetryPolicy, transient: Predicate) -> tenacity.Retrying:
    def wait(state: tenacity.RetryCallState) -> float:
        return backoff_delay(state.attempt_number, policy)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s: %s; retry %d/%d in %.1fs",
            what,
            describe_error(exc) if exc else "failed",
            state.attempt_number,
            policy.max_attempts - 1,
            delay,
            extra={
                "fields": {
                    "event": "retry",
                    "what": what,
                    "attempt": state.attempt_number,
                    "max_attempts": policy.max_attempts,
                    "delay": round(delay, 3),
                    "error": describe_error(exc) if exc else None,
                }
            },
        )

    return tenacity.Retrying(
        sleep=policy.sleep,
        stop=tenacity.stop_after_attempt(policy.max_attempts),
        wait=wait,
        retry=tenacity.retry_if_exception(transient),
        before_sleep=before_sleep,
        reraise=True,
    )


def call(
    fn: Callable[[], T],
    what: str,
    policy: RetryPolicy,
    *,
    transient: Predicate = is_transient,
) -> T:
    """Run *fn* until it succeeds, fails with an error *transient* rejects, or
    policy.max_attempts is reached; return its result or re-raise its last
    error unchanged. Each retry logs a warning naming *what*, the error, the
    retry number out of max_attempts - 1, and the wait."""
    result: Any = _retrying(what, policy, transient)(fn)
    return result  # type: ignore[no-any-return]
