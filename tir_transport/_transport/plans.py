"""Running work that is not one request: sans-IO plans, and many requests in flight.

A plan (a fallback, a search) is a generator without I/O: it yields each request, is sent
its reply or its error, and returns the result; `drive` and `adrive` run one over a send
function. `in_flight` and `ain_flight` send a list of jobs a few at a time, results in order.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, TypeVar

from .._errors import TIRError

__all__ = ["Plan", "adrive", "ain_flight", "check_batching", "drive", "in_flight"]

_Request = TypeVar("_Request")
_Reply = TypeVar("_Reply")
_Result = TypeVar("_Result")
_Job = TypeVar("_Job")

# A sans-IO plan of requests (a fallback, a search): yields each request, is sent its reply or
# its error, returns the result. `drive` and `adrive` run one; the API modules write none.
Plan = Generator[_Request, _Reply | TIRError, _Result]


def drive(plan: Plan[_Request, _Reply, _Result], send: Callable[[_Request], _Reply]) -> _Result:
    """Run `plan`, sending each of its requests with `send` (which raises `TIRError`)."""
    request = next(plan)
    while True:
        outcome: _Reply | TIRError
        try:
            outcome = send(request)
        except TIRError as e:
            outcome = e
        try:
            request = plan.send(outcome)
        except StopIteration as done:
            result: _Result = done.value
            return result


async def adrive(
    plan: Plan[_Request, _Reply, _Result], send: Callable[[_Request], Awaitable[_Reply]]
) -> _Result:
    """Async twin of `drive`."""
    request = next(plan)
    while True:
        outcome: _Reply | TIRError
        try:
            outcome = await send(request)
        except TIRError as e:
            outcome = e
        try:
            request = plan.send(outcome)
        except StopIteration as done:
            result: _Result = done.value
            return result


def check_batching(batch_size: int, max_concurrency: int) -> None:
    """Refuse a batch size or a concurrency below 1 (for the API clients that batch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency!r}")


def in_flight(
    send: Callable[[_Job], _Result], jobs: Sequence[_Job], limit: int, name: str
) -> list[_Result]:
    """`send(job)` for every job, up to `limit` at a time on threads; results in job order.

    Each runs in a copy of the caller's context, so `track_usage()` sees it. The first
    failure is raised at once, as it is: jobs not started are never started, and running
    ones are left to end on their own (a request cannot be taken back), never waited for,
    not even by the interpreter at exit (the threads are daemons).
    """
    if len(jobs) <= 1 or limit == 1:
        return [send(job) for job in jobs]
    contexts = [contextvars.copy_context() for _ in jobs]  # copied here, in the caller's
    results: list[Any] = [None] * len(jobs)
    queue = iter(range(len(jobs)))
    lock = threading.Lock()
    over = threading.Event()  # every job done, or one failed, or the caller left
    failures: list[BaseException] = []
    left = [len(jobs)]

    def work() -> None:
        while not over.is_set():
            with lock:
                index = next(queue, None)
            if index is None:
                return
            try:
                results[index] = contexts[index].run(send, jobs[index])
            except BaseException as e:
                failures.append(e)
                over.set()
                return
            with lock:
                left[0] -= 1
                if not left[0]:
                    over.set()

    for number in range(min(limit, len(jobs))):
        threading.Thread(target=work, name=f"{name}-{number}", daemon=True).start()
    try:
        over.wait()
    finally:
        over.set()  # a caller interrupted (Ctrl-C) starts no more jobs either
    if failures:
        raise failures[0]
    return results


async def ain_flight(
    send: Callable[[_Job], Awaitable[_Result]], jobs: Sequence[_Job], limit: int
) -> list[_Result]:
    """Async twin of `in_flight`: the first failure cancels the others and is raised."""
    if len(jobs) <= 1:
        return [await send(job) for job in jobs]
    slots = asyncio.Semaphore(limit)

    async def one(job: _Job) -> _Result:
        async with slots:
            return await send(job)

    tasks = [asyncio.ensure_future(one(job)) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
