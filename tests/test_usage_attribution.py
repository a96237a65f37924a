"""`track_usage()` keeps each caller's usage with that caller: a server serving two users."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

from langchain_tir import ChatTIRLlama
from llama_index_tir import TIRLlamaLLM
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator
from tir_transport import UsageTracker, track_usage


def settings(emulator: Emulator) -> dict[str, Any]:
    return {"api_key": TEST_KEY, "base_url": emulator.base_url, "timeout": 10.0}


def expected(prompt_words: int, max_tokens: int, count: int) -> tuple[int, int, int]:
    # The emulator counts words + 4 per message, and answers max_tokens pieces (at most 9).
    return (count, count * (prompt_words + 4), count * min(max_tokens, 9))


def totals(usage: UsageTracker) -> tuple[int, int, int]:
    return (usage.requests, usage.input_tokens, usage.output_tokens)


def test_two_users_in_threads_and_a_stranger_each_get_their_own(emulator: Emulator) -> None:
    emulator.chat_delay = 0.01  # requests of all three overlap
    llm = ChatTIRLlama(**settings(emulator))  # one shared instance, as in a web server
    results: dict[str, tuple[int, int, int]] = {}
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def user_a() -> None:  # LangChain's batch: a context-copying executor inside the block
        start.wait()
        with track_usage() as usage:
            for _ in range(3):
                llm.batch(["one two three"] * 8, config={"max_concurrency": 8}, max_tokens=2)
        results["a"] = totals(usage)

    def user_b() -> None:  # asyncio tasks inside the block, on this thread's own loop
        start.wait()

        async def run() -> UsageTracker:
            with track_usage() as usage:
                for _ in range(3):
                    await asyncio.gather(
                        *(llm.ainvoke("five words in this prompt", max_tokens=5) for _ in range(6))
                    )
            return usage

        results["b"] = totals(asyncio.run(run()))

    def stranger() -> None:  # no block at all: counted nowhere
        start.wait()
        for _ in range(10):
            llm.invoke("x", max_tokens=7)

    def guarded(fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except BaseException as e:
                errors.append(e)

        return run

    threads = [threading.Thread(target=guarded(f)) for f in (user_a, user_b, stranger)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert results["a"] == expected(3, 2, 24)
    assert results["b"] == expected(5, 5, 18)


async def test_two_users_in_asyncio_tasks_each_get_their_own(emulator: Emulator) -> None:
    emulator.chat_delay = 0.01
    llm = TIRLlamaLLM(**settings(emulator))

    async def user(prompt: str, max_tokens: int, count: int) -> UsageTracker:
        with track_usage() as usage:
            await asyncio.gather(
                *(llm.acomplete(prompt, max_tokens=max_tokens) for _ in range(count))
            )
        return usage

    # A request made outside both blocks, while they run, counts in neither.
    outside = asyncio.gather(*(llm.acomplete("z", max_tokens=1) for _ in range(5)))
    a, b = await asyncio.gather(user("a b", 3, 12), user("c d e f", 6, 9))
    await outside
    assert totals(a) == expected(2, 3, 12)
    assert totals(b) == expected(4, 6, 9)


def test_a_plain_thread_counts_when_handed_the_context(emulator: Emulator) -> None:
    llm = ChatTIRLlama(**settings(emulator))
    with track_usage() as usage:
        plain = threading.Thread(target=llm.invoke, args=("p q",), kwargs={"max_tokens": 1})
        plain.start()
        plain.join()
        handed = threading.Thread(
            target=contextvars.copy_context().run,
            args=(llm.invoke, "p q"),
            kwargs={"max_tokens": 1},
        )
        handed.start()
        handed.join()
    assert len(emulator.requests) == 2
    assert totals(usage) == expected(2, 1, 1)
