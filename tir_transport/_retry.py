"""Retry policy as pure functions; the one loop that applies it is the transport's."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ._errors import APIConnectionError, StreamInterruptedError, TIRError

__all__ = ["RetryPolicy", "is_retryable", "parse_retry_after"]

_RETRY_STATUSES = frozenset({408, 409, 429})


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds the server asked us to wait, from `retry-after-ms` or `Retry-After`.

    `Retry-After` may be seconds or an HTTP date. Returns None when absent or unreadable.
    """
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def is_retryable(error: TIRError) -> bool:
    """Whether sending the same request again may succeed.

    Connection failures and timeouts, and 408, 409, 429 and 5xx are; 400, 401, 403, 404,
    422 and anything else are not.
    """
    if isinstance(error, APIConnectionError):
        return True
    status = error.status_code
    if isinstance(error, StreamInterruptedError) and status is None:
        return True  # the connection broke before anything was handed on
    if status == 500 and "validation error" in error.message.lower():
        return False  # llama.cpp's server reports a bad request this way: the same fails again
    return status is not None and (status in _RETRY_STATUSES or 500 <= status < 600)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to retry and how long to wait between tries."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    # A server asking for a longer pause than this is not waited for: we give up instead.
    max_retry_after: float = 60.0

    def delay(
        self,
        error: TIRError,
        attempt: int,
        *,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait before try `attempt + 1`, or None to give up and raise `error`.

        Args:
            error: what the try `attempt` (0 for the first) failed with.
            attempt: how many retries were made already.
            rand: a source of numbers in [0, 1), for the jitter.
        """
        if attempt >= self.max_retries or not is_retryable(error):
            return None
        if attempt >= 1 and isinstance(error, StreamInterruptedError) and error.empty_stream:
            # An empty stream is tried once more (a server restarting may send one), not
            # max_retries times: a server that cannot answer this request answers it the
            # same way every time.
            return None
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, float | int):
            if retry_after > self.max_retry_after:
                return None
            return float(retry_after)
        # Exponential backoff with "equal jitter": at least half the step, so retries
        # from many clients spread out without ever retrying at once.
        step = min(self.max_delay, self.initial_delay * (2.0**attempt))
        return step / 2.0 + rand() * step / 2.0
