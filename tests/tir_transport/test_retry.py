from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from tir_transport import (
    APIConnectionError,
    APITimeoutError,
    RetryPolicy,
    StreamInterruptedError,
    TIRError,
)
from tir_transport._errors import error_from_response
from tir_transport._retry import is_retryable, parse_retry_after


def status_error(status: int, retry_after: float | None = None) -> TIRError:
    error = error_from_response(status, b"{}")
    error.retry_after = retry_after
    return error


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable(status_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_never_retried_statuses(status: int) -> None:
    assert not is_retryable(status_error(status))
    assert RetryPolicy(max_retries=5).delay(status_error(status), 0) is None


def test_connection_errors_and_broken_streams_are_retryable() -> None:
    assert is_retryable(APIConnectionError("refused"))
    assert is_retryable(APITimeoutError("slow"))
    assert is_retryable(StreamInterruptedError("cut"))
    # An error event that carries a client-error code is not.
    assert not is_retryable(StreamInterruptedError("bad", status_code=400))


def test_retry_after_seconds_and_milliseconds() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after(None) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-4"}) == 0.0


def test_retry_after_http_date() -> None:
    when = datetime(2030, 1, 1, 0, 0, 10, tzinfo=UTC)
    now = datetime(2030, 1, 1, 0, 0, 0, tzinfo=UTC).timestamp()
    headers = {"retry-after": format_datetime(when, usegmt=True)}
    assert parse_retry_after(headers, now=lambda: now) == pytest.approx(10.0)


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(max_retries=3, max_retry_after=30)
    assert policy.delay(status_error(429, 2.0), 0) == 2.0
    assert policy.delay(status_error(503, 0.0), 1) == 0.0
    assert policy.delay(status_error(429, 31.0), 0) is None


def test_exponential_backoff_with_jitter_bounds() -> None:
    policy = RetryPolicy(max_retries=10, initial_delay=0.5, max_delay=8.0)
    error = status_error(503)
    lows = [policy.delay(error, n, rand=lambda: 0.0) for n in range(6)]
    highs = [policy.delay(error, n, rand=lambda: 0.999999) for n in range(6)]
    assert lows == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert highs == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0, 8.0], rel=1e-5)


def test_gives_up_after_max_retries() -> None:
    policy = RetryPolicy(max_retries=2)
    error = status_error(503)
    assert policy.delay(error, 0) is not None
    assert policy.delay(error, 1) is not None
    assert policy.delay(error, 2) is None
    assert RetryPolicy(max_retries=0).delay(error, 0) is None
