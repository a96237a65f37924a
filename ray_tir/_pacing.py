"""One pace for a whole job: the pacer actor every actor of a job, on every node, asks."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import ray

from tir_transport import Limits, RatePacer


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

    def reserve_many(self, count: int) -> list[float]:
        """`count` send times, in order: one round trip for an actor's requests that ask at once."""
        return [self.reserve() for _ in range(count)]


# The Ray actor class of `_JobPacer` (typed Any: Ray's decorator is not typed for mypy).
_JobPacerActor: Any = ray.remote(num_cpus=0)(_JobPacer)


class _JobPacerClient:
    """An actor's way to the job's pacer actor (made on the driver, a copy in each actor).

    One round trip at a time per actor: the requests that ask while one is out get their
    times together from the next. A round trip costs the actor's and the pacer's CPU (a Ray
    call each): one per request made the pacer the bottleneck of a 2 x 32 job that its pace
    never slowed (issue 31).
    """

    # A send time that reaches the actor later than this is not used: the actor's event loop
    # was busy (a first request's setup, a pause), and sending at once would squeeze the pace
    # (seen here: the opening burst's times arriving 0.2 s late, on top of the ones after it).
    LATE = 0.05

    def __init__(self, pacer: Any, requests_per_minute: float) -> None:
        self.pacer = pacer
        self.requests_per_minute = requests_per_minute
        self._waiting: list[asyncio.Future[float]] = []
        self._out: asyncio.Task[None] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The requests waiting for a time stay behind: a copy starts with none.
        return {"pacer": self.pacer, "requests_per_minute": self.requests_per_minute}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    async def send_time(self) -> float:
        """A wall-clock time at which to send, from the job's pacer, not late on arrival."""
        while True:
            waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            if self._out is None:
                self._ask()
            when = await waiter
            if time.time() - when <= self.LATE:
                return when
            # That send time is spent; a new one is taken at the end of the queue.

    def _ask(self) -> None:
        # Sent here, at once (Ray submits at `.remote()`); read by a task.
        asking, self._waiting = self._waiting, []
        times = self.pacer.reserve_many.remote(len(asking))
        self._out = asyncio.ensure_future(self._hand_out(asking, times))

    async def _hand_out(self, asking: list[asyncio.Future[float]], times: Any) -> None:
        try:
            answer: list[float] = await times
        except asyncio.CancelledError:
            for waiter in asking + self._waiting:
                waiter.cancel()
            raise
        except Exception as error:  # the pacer is gone: every request that asked fails
            for waiter in asking:
                if not waiter.done():
                    waiter.set_exception(error)
        else:
            for waiter, when in zip(asking, answer, strict=True):
                if not waiter.done():  # a request cancelled meanwhile: its time goes unused
                    waiter.set_result(when)
        self._out = None
        if self._waiting:
            self._ask()


class _ActorLimits(Limits):
    """An actor's limits: `max_in_flight`, and the job's pace asked before a slot is taken.

    `Limits` asks its remote pacer after taking the request's slot, so the round trip to the
    job's pacer actor (a few ms, more on a busy machine) holds a slot that a request could
    use: a limit that never binds took the slots' busy share from 0.92 to 0.76 (issue 31).
    Here a request takes its send time first, waits for it, and only then takes a slot.

    A request that has its time may still wait for a slot (all busy: the in-flight limit
    binds), and then send after its time; requests that waited together would go out
    together, over the pace. So only a few requests of an actor hold a time at once
    (`ahead`): half its slots, which covers the wait for a time (one or two round trips, see
    `_JobPacerClient`) at the rate slots free up (a quarter held a 2 x 32 job under a limit
    that never bound a few points lower), and no more than the job's pace gives in LATE, so
    that at most that many of an actor's requests go out late together. The others wait
    before asking. `check` is called before a time is asked for and before each request is
    sent (retries too): it raises to send nothing more.
    """

    def __init__(
        self, max_in_flight: int, pacer: _JobPacerClient | None, check: Callable[[], None]
    ) -> None:
        super().__init__(max_in_flight=max_in_flight)
        self.job_pacer = pacer
        self.check = check
        self.slots = asyncio.Semaphore(max_in_flight)
        ahead = max_in_flight // 2
        if pacer is not None:
            ahead = min(ahead, math.ceil(pacer.requests_per_minute / 60.0 * pacer.LATE))
        self.ahead = asyncio.Semaphore(max(1, ahead))

    def aslot(self) -> AbstractAsyncContextManager[None]:
        """A request's slot, taken after its send time (see the class)."""
        return _ActorSlot(self)

    async def _take(self) -> None:
        self.check()
        if self.job_pacer is None:
            await self.slots.acquire()
        else:
            async with self.ahead:
                wait = await self.job_pacer.send_time() - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self.slots.acquire()
        try:
            # A 429's pause holds every request of the actor (the transport sets it).
            wait = self.backoff.wait()
            while wait > 0:
                await asyncio.sleep(wait)
                wait = self.backoff.wait()
            self.check()
        except BaseException:
            self.slots.release()
            raise


class _ActorSlot:
    """A held slot of `_ActorLimits` (a class, not a generator: see tir_transport's)."""

    __slots__ = ("_held", "_limits")

    def __init__(self, limits: _ActorLimits) -> None:
        self._limits = limits
        self._held = False

    async def __aenter__(self) -> None:
        await self._limits._take()
        self._held = True

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the slot back (synchronous: usable from a finalizer)."""
        if self._held:
            self._held = False
            self._limits.slots.release()


def _job_pacer(requests_per_minute: float | None) -> _JobPacerClient | None:
    """The job's pacer (an actor) and the way to it, or None without a rate."""
    if requests_per_minute is None:
        return None
    RatePacer(requests_per_minute)  # a bad rate fails here, on the driver
    return _JobPacerClient(_JobPacerActor.remote(requests_per_minute), requests_per_minute)
