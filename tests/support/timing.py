"""Bounds for tests that depend on time, which hold on a busy machine (`make test-stress`).

They bound what the code promises (the token bucket's earliest send times, the spread of a
paced run), never how long a busy machine takes; any slack is named here, with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable

# time.monotonic() of a test and of the emulator's records differ by float rounding only.
CLOCK_EPSILON = 0.005
# Between a Ray actor reserving a send time and the request reaching the emulator: process
# scheduling on a 2-core machine with other work. It delays the first request as much as the
# last, or more; it never lets a request go earlier than its reserved time.
SCHEDULING_SLACK = 0.5


def assert_token_bucket(
    starts: Iterable[float], since: float, burst: int, per_second: float
) -> None:
    """No request came before a token bucket allowed it.

    The k-th request (counted from 1, after a full bucket of `burst`) no earlier than
    (k - burst) / rate after `since`, a moment before the first reservation. A busy machine
    only makes requests later, so this holds under any load and fails only when the pace does.
    """
    for k, start in enumerate(sorted(starts), 1):
        earliest = since + max(0, k - burst) / per_second
        assert start >= earliest - CLOCK_EPSILON, (k, round(start - since, 3))


def assert_paced_spread(starts: Iterable[float], burst: int, per_second: float) -> None:
    """The requests after the burst were spread at the rate, from the first to the last.

    For runs where no clock reading precedes the first reservation (Ray actors): the spread
    of arrivals is at least (n - burst) / rate, less SCHEDULING_SLACK for the first request's
    own delay. Two pacers where one should be (a burst each, twice the rate) fall far short.
    """
    ordered = sorted(starts)
    wanted = (len(ordered) - burst) / per_second - SCHEDULING_SLACK
    assert ordered[-1] - ordered[0] >= wanted, (round(ordered[-1] - ordered[0], 3), wanted)
