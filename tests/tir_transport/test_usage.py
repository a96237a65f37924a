from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

from tir_transport import Usage, track_usage
from tir_transport._usage import record_usage


def test_usage_adds() -> None:
    assert Usage(1, 2, 3) + Usage(10, 20, 30) == Usage(11, 22, 33)
    assert Usage.from_openai({"prompt_tokens": 4, "completion_tokens": 5}) == Usage(4, 5, 9)
    assert Usage.from_openai({"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 10}) == (
        Usage(4, 5, 10)
    )


def test_tracks_per_model_and_overall() -> None:
    with track_usage() as usage:
        record_usage("a", Usage(1, 2, 3))
        record_usage("b", Usage(10, 20, 30))
        record_usage("a", Usage(1, 1, 2))
        record_usage("a", None)  # a server that sent no usage: counted, no tokens invented
    assert usage.requests == 4
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (12, 23, 35)
    assert usage.by_model == {"a": Usage(2, 3, 5), "b": Usage(10, 20, 30)}
    assert usage.requests_by_model == {"a": 3, "b": 1}


def test_nothing_is_counted_outside_or_after_the_block() -> None:
    record_usage("a", Usage(1, 1, 2))
    with track_usage() as usage:
        pass
    record_usage("a", Usage(1, 1, 2))
    assert usage.requests == 0


def test_nested_blocks_both_count() -> None:
    with track_usage() as outer:
        record_usage("a", Usage(1, 0, 1))
        with track_usage() as inner:
            record_usage("a", Usage(2, 0, 2))
    assert outer.input_tokens == 3
    assert inner.input_tokens == 2


def test_plain_threads_are_not_counted_unless_handed_the_context() -> None:
    with track_usage() as usage:
        # A plain thread inherits no context: in a server it may be another user's work.
        plain = threading.Thread(target=record_usage, args=("a", Usage(1, 1, 2)))
        plain.start()
        plain.join()
        assert usage.requests == 0
        # Handed the block's context, as the docs show, it counts.
        handed = threading.Thread(
            target=contextvars.copy_context().run, args=(record_usage, "a", Usage(1, 1, 2))
        )
        handed.start()
        handed.join()
    assert (usage.requests, usage.total_tokens) == (1, 2)


def test_thread_pool_with_copied_context_counts() -> None:
    with track_usage() as usage, ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, record_usage, "m", Usage(1, 0, 1))
            for _ in range(20)
        ]
        for future in futures:
            future.result()
    assert usage.requests == 20


def test_a_thread_started_before_the_block_does_not_count() -> None:
    go, done = threading.Event(), threading.Event()

    def worker() -> None:
        go.wait()
        record_usage("a", Usage(5, 5, 10))
        done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    with track_usage() as usage:
        go.set()
        assert done.wait(5), "the worker thread never recorded"
    thread.join()
    assert usage.requests == 0


def test_asyncio_tasks_started_inside_count() -> None:
    async def one() -> None:
        await asyncio.sleep(0)
        record_usage("a", Usage(1, 2, 3))

    async def main() -> int:
        with track_usage() as usage:
            await asyncio.gather(*(one() for _ in range(10)))
        return usage.total_tokens

    assert asyncio.run(main()) == 30


def test_concurrent_blocks_in_separate_tasks_are_kept_apart() -> None:
    async def job(n: int) -> int:
        with track_usage() as usage:
            for _ in range(n):
                await asyncio.sleep(0)
                record_usage("a", Usage(1, 0, 1))
        return usage.requests

    async def main() -> tuple[int, int]:
        first, second = await asyncio.gather(job(3), job(5))
        return first, second

    assert asyncio.run(main()) == (3, 5)
