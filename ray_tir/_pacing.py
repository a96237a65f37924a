"""One pace for a whole job: the pacer actor every actor of a job, on every node, asks."""

from __future__ import annotations

import time
from typing import Any

import ray

from tir_transport import RatePacer


class _JobPacer:
    """One pace for a whole job: every actor, on every node, reserves its requests here."""

    def __init__(self, requests_per_minute: float) -> None:
        self.pacer = RatePacer(requests_per_minute)

    def reserve(self) -> float:
        """The wall-clock time at which the caller may send.

        A time, not a wait: a wait would start only when the answer reached the caller, and
        answers that take longer to arrive than others would bunch requests together.
        (Nodes' clocks agree to NTP's precision; on one machine they are one clock.)
        """
        return time.time() + self.pacer.reserve()


# The Ray actor class of `_JobPacer` (typed Any: Ray's decorator is not typed for mypy).
_JobPacerActor: Any = ray.remote(num_cpus=0)(_JobPacer)


class _JobPacerClient:
    """An actor's `RemotePacer` for its `Limits`: asks the job's pacer actor."""

    # A send time that reaches the actor later than this is not used: the actor's event loop
    # was busy (a first request's setup, a pause), and sending at once would squeeze the pace
    # (seen here: the opening burst's times arriving 0.2 s late, on top of the ones after it).
    LATE = 0.05

    def __init__(self, pacer: Any) -> None:
        self.pacer = pacer

    async def reserve(self) -> float:
        """Seconds to wait before sending, from a send time the job's pacer gave."""
        while True:
            when: float = await self.pacer.reserve.remote()
            wait = when - time.time()
            if wait >= -self.LATE:
                return max(0.0, wait)
            # That send time is spent; a new one is taken at the end of the queue.


def _job_pacer(requests_per_minute: float | None) -> Any:
    if requests_per_minute is None:
        return None
    RatePacer(requests_per_minute)  # a bad rate fails here, on the driver
    return _JobPacerActor.remote(requests_per_minute)
