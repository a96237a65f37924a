"""Client-side limits: requests in flight, requests per minute, and a shared back-off.

The decisions are pure (`RatePacer.reserve`, `Backoff.wait`): each takes the time now and
answers how long to wait. `Limits` holds them for one client; the clients do the waiting.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Protocol

__all__ = ["Backoff", "Limits", "RatePacer", "RemotePacer"]


class RatePacer:
    """Paces requests to `requests_per_minute` on average, bursting one second's worth at most.

    A token bucket holding `max(1, rpm / 60)` tokens, refilled at `rpm / 60` per second.

    `reserve` takes a token (the bucket may go below zero: later callers queue behind) and says
    how long to wait before sending. Thread-safe; shared by sync and async callers alike.
    """

    def __init__(self, requests_per_minute: float) -> None:
        """Create a pacer.

        Raises:
            ValueError: a rate that is not positive.
        """
        if not requests_per_minute > 0:
            raise ValueError(f"requests_per_minute must be positive, got {requests_per_minute!r}")
        self.rate = requests_per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self._tokens = self.capacity
        self._stamp: float | None = None
        self._lock = threading.Lock()

    def reserve(self, now: float | None = None) -> float:
        """Take one request's token; the seconds to wait before sending it."""
        with self._lock:
            now = time.monotonic() if now is None else now
            if self._stamp is not None:
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def refund(self) -> None:
        """Give back the token `reserve` took for a request that was not sent.

        (Cancelled while it waited for its send time: later requests do not wait for it.)
        """
        with self._lock:
            self._tokens = min(self.capacity, self._tokens + 1.0)

    def _after_fork(self) -> None:
        # Another thread of the parent may have held the lock when it forked.
        self._lock = threading.Lock()


class Backoff:
    """When one request is told to wait (429 with `Retry-After`), every request waits it out."""

    def __init__(self) -> None:
        self._until = 0.0

    def hold(self, seconds: float, now: float | None = None) -> None:
        """The server asked for a pause of `seconds` from `now`."""
        now = time.monotonic() if now is None else now
        self._until = max(self._until, now + seconds)

    def wait(self, now: float | None = None) -> float:
        """Seconds left of the pause (0 when there is none)."""
        now = time.monotonic() if now is None else now
        return max(0.0, self._until - now)


class RemotePacer(Protocol):
    """A pacer that lives elsewhere (Ray's, shared by every actor of a job); async only."""

    async def reserve(self) -> float:
        """Seconds to wait before sending (0 to send now)."""
        ...


class Limits:
    """The limits of one client: `max_in_flight`, `requests_per_minute`, the shared back-off.

    `max_in_flight` counts sync requests (threads) and async requests of each event loop
    separately: a slot is held from before the request is sent until its reply (or stream)
    is read. Requests per minute hold across all of them, and across every retry.
    """

    def __init__(
        self,
        *,
        max_in_flight: int | None = None,
        requests_per_minute: float | None = None,
        pacer: RatePacer | None = None,
        remote_pacer: RemotePacer | None = None,
    ) -> None:
        """Create the limits; None means no limit.

        Args:
            max_in_flight: requests in flight at once.
            requests_per_minute: the average rate, paced evenly.
            pacer: a pacer to share with other clients (instead of `requests_per_minute`).
            remote_pacer: a pacer kept elsewhere (Ray's job-wide one); async requests only.

        Raises:
            ValueError: a limit below 1.
        """
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight!r}")
        self.max_in_flight = max_in_flight
        self.pacer = pacer or (RatePacer(requests_per_minute) if requests_per_minute else None)
        self.remote_pacer = remote_pacer
        self.backoff = Backoff()
        self._pid = os.getpid()
        self._sync_slots = threading.BoundedSemaphore(max_in_flight) if max_in_flight else None
        self._async_slots: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()

    def _check_fork(self) -> None:
        """In a forked child, fresh slots and locks.

        The parent's may be held by its other threads, which the child does not have: it
        waited for them for ever.
        """
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        if self.max_in_flight:
            self._sync_slots = threading.BoundedSemaphore(self.max_in_flight)
        self._async_slots = weakref.WeakKeyDictionary()
        if self.pacer is not None:
            self.pacer._after_fork()

    def __getstate__(self) -> dict[str, object]:
        # Locks and the state of the pace stay behind: a copy starts its own.
        rpm = self.pacer.rate * 60.0 if self.pacer is not None else None
        return {"max_in_flight": self.max_in_flight, "requests_per_minute": rpm}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    @property
    def active(self) -> bool:
        """Whether a request has anything to wait for (if not, the clients skip it all)."""
        return (
            self.max_in_flight is not None
            or self.pacer is not None
            or self.remote_pacer is not None
            or self.backoff.wait() > 0
        )

    def _wait(self) -> float:
        wait = self.backoff.wait()
        if self.pacer is not None:
            wait = max(wait, self.pacer.reserve())
        return wait

    def _not_sent(self) -> None:
        # Waiting for its send time, the request was cancelled (or Ctrl-C): its token back.
        if self.pacer is not None:
            self.pacer.refund()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a request slot, after waiting for the pace and any shared back-off."""
        self._check_fork()
        if self._sync_slots is not None:
            self._sync_slots.acquire()
        try:
            wait = self._wait()
            try:
                while wait > 0:
                    time.sleep(wait)
                    # A 429 that arrived while we waited extends the pause.
                    wait = self.backoff.wait()
            except BaseException:
                self._not_sent()
                raise
            yield
        finally:
            if self._sync_slots is not None:
                self._sync_slots.release()

    def aslot(self) -> AbstractAsyncContextManager[None]:
        """Async twin of `slot`."""
        return _AsyncSlot(self)

    async def _aacquire(self) -> asyncio.Semaphore | None:
        self._check_fork()
        slots = None
        if self.max_in_flight:
            loop = asyncio.get_running_loop()
            slots = self._async_slots.get(loop)
            if slots is None:
                slots = self._async_slots[loop] = asyncio.Semaphore(self.max_in_flight)
        if slots is not None:
            await slots.acquire()
        try:
            wait = self._wait()
            try:
                if self.remote_pacer is not None:
                    wait = max(wait, await self.remote_pacer.reserve())
                while wait > 0:
                    await asyncio.sleep(wait)
                    wait = self.backoff.wait()
            except BaseException:
                self._not_sent()
                raise
        except BaseException:
            if slots is not None:
                slots.release()
            raise
        return slots


class _AsyncSlot:
    """A held async request slot.

    A class, not an `@asynccontextmanager`: that is an async generator, and a stream left
    early is closed at loop shutdown while asyncio closes every async generator at once,
    this one included ("generator didn't stop after athrow()").
    """

    __slots__ = ("_limits", "_slots")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._slots: asyncio.Semaphore | None = None

    async def __aenter__(self) -> None:
        self._slots = await self._limits._aacquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the slot back (synchronous: usable from a finalizer)."""
        if self._slots is not None:
            self._slots.release()
            self._slots = None
