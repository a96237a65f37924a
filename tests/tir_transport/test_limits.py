"""Client-side limits: the pure pacer and back-off, and limits held at the emulator."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from typing import Any

import pytest
from langchain_core.rate_limiters import InMemoryRateLimiter

from langchain_tir import ChatTIRLlama, TIREmbeddings
from llama_index_tir import TIREmbedding, TIRLlamaLLM
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply
from tir_transport import ChatClient, TIRConfig, build_payload
from tir_transport._limits import Backoff, Limits, RatePacer

# -- pure -------------------------------------------------------------------------------------


def test_pacer_bursts_one_second_then_paces() -> None:
    pacer = RatePacer(600)  # 10 per second
    waits = [pacer.reserve(now=100.0) for _ in range(12)]
    assert waits[:10] == [0.0] * 10
    assert waits[10:] == pytest.approx([0.1, 0.2])
    # Half a second later five tokens have come back, two of them owed already.
    assert pacer.reserve(now=100.5) == 0.0
    assert pacer.reserve(now=100.5) == 0.0
    assert pacer.reserve(now=100.5) == 0.0
    assert pacer.reserve(now=100.5) == pytest.approx(0.1)


def test_slow_pacer_never_bursts_more_than_one() -> None:
    pacer = RatePacer(30)  # one every 2 s
    assert [pacer.reserve(now=0.0) for _ in range(3)] == pytest.approx([0.0, 2.0, 4.0])
    assert pacer.reserve(now=1000.0) == 0.0  # a long idle does not bank a burst
    assert pacer.reserve(now=1000.0) == pytest.approx(2.0)


def test_backoff() -> None:
    backoff = Backoff()
    assert backoff.wait(now=5.0) == 0.0
    backoff.hold(2.0, now=5.0)
    backoff.hold(1.0, now=5.0)  # a shorter ask does not shorten the pause
    assert backoff.wait(now=6.0) == pytest.approx(1.0)
    assert backoff.wait(now=8.0) == 0.0


def test_bad_limits() -> None:
    with pytest.raises(ValueError):
        Limits(max_in_flight=0)
    with pytest.raises(ValueError):
        RatePacer(0)


def test_limits_pickle_to_fresh_state() -> None:
    limits = Limits(max_in_flight=3, requests_per_minute=120)
    limits.backoff.hold(100)
    copy = pickle.loads(pickle.dumps(limits))
    assert (copy.max_in_flight, copy.pacer and copy.pacer.rate) == (3, 2.0)
    assert copy.backoff.wait() == 0.0


# -- at the emulator --------------------------------------------------------------------------


def client(emulator: Emulator, **limits: Any) -> ChatClient:
    config = TIRConfig.from_env(api_key=TEST_KEY, base_url=emulator.base_url, timeout=10)
    return ChatClient(config, limits=Limits(**limits))


BODY = build_payload([{"role": "user", "content": "hi"}], "m")


def test_max_in_flight_async(emulator: Emulator) -> None:
    emulator.queue(*[Reply(delay=0.05)] * 12)
    tir = client(emulator, max_in_flight=3)

    async def run() -> None:
        await asyncio.gather(*(tir.acreate(BODY) for _ in range(12)))

    asyncio.run(run())
    assert emulator.max_in_flight == 3


def test_max_in_flight_sync_threads_and_streams(emulator: Emulator) -> None:
    emulator.queue(*[Reply(delay=0.02)] * 8)
    tir = client(emulator, max_in_flight=2)
    threads = [
        threading.Thread(target=lambda: list(tir.stream({**BODY, "stream": True})))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert emulator.max_in_flight == 2
    assert len(emulator.requests) == 8


def test_requests_per_minute_are_paced(emulator: Emulator) -> None:
    tir = client(emulator, requests_per_minute=1200)  # 20 per second, bursts of 20

    async def run() -> None:
        await asyncio.gather(*(tir.acreate(BODY) for _ in range(50)))

    started = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - started
    # 20 at once, then one every 50 ms: 30 more take 1.5 s.
    assert elapsed >= 1.4
    starts = sorted(start for start, _ in emulator.spans)
    # A token bucket: in any window of T seconds, at most the burst (20) plus 20 per second.
    for window in (0.01, 0.5, 1.0, 2.0):
        for i, start in enumerate(starts):
            inside = [s for s in starts[i:] if s < start + window]
            assert len(inside) <= 20 + 20 * window + 1, window


def test_a_429_pauses_every_request_of_the_client(emulator: Emulator) -> None:
    emulator.queue(Reply(status=429, headers={"retry-after": "0.6"}))
    tir = client(emulator)

    async def run() -> float:
        first = asyncio.ensure_future(tir.acreate(BODY))
        await asyncio.sleep(0.1)  # the 429 has come back; the first is waiting to retry
        told = time.monotonic()
        await asyncio.gather(*(tir.acreate(BODY) for _ in range(5)))
        await first
        return told

    told = asyncio.run(run())
    assert len(emulator.requests) == 7
    # The five later requests were sent only after the pause, not into the wall.
    later = sorted(start for start, _ in emulator.spans)[1:]
    assert all(start >= told + 0.4 for start in later)


def test_sync_429_pause_is_shared_too(emulator: Emulator) -> None:
    emulator.queue(Reply(status=429, headers={"retry-after": "0.5"}))
    tir = client(emulator)
    first = threading.Thread(target=lambda: tir.create(BODY))
    first.start()
    time.sleep(0.1)
    started = time.monotonic()
    tir.create(BODY)
    assert time.monotonic() - started >= 0.35
    first.join()


@pytest.mark.parametrize("framework", ["langchain", "llamaindex"])
def test_adapters_expose_the_limits(emulator: Emulator, framework: str) -> None:
    emulator.queue(*[Reply(delay=0.05)] * 6)
    options = {"api_key": TEST_KEY, "base_url": emulator.base_url, "max_in_flight": 2}

    async def run() -> None:
        if framework == "langchain":
            await ChatTIRLlama(**options).abatch(["hi"] * 6)
        else:
            llm = TIRLlamaLLM(**options)
            await asyncio.gather(*(llm.acomplete("hi") for _ in range(6)))

    asyncio.run(run())
    assert emulator.max_in_flight == 2


@pytest.mark.parametrize("framework", ["langchain", "llamaindex"])
def test_embedding_adapters_expose_the_limits(emulator: Emulator, framework: str) -> None:
    emulator.embed_delay = 0.03
    options = {"api_key": TEST_KEY, "base_url": emulator.base_url, "model": "e5"}
    texts = [f"text {i}" for i in range(40)]
    if framework == "langchain":
        TIREmbeddings(**options, batch_size=4, max_in_flight=2).embed_documents(texts)
    else:
        TIREmbedding(**options, embed_batch_size=4, max_in_flight=2).get_text_embedding_batch(texts)
    assert emulator.max_in_flight == 2


def test_langchain_rate_limiter_still_works_beside(emulator: Emulator) -> None:
    limiter = InMemoryRateLimiter(requests_per_second=20, check_every_n_seconds=0.01)
    llm = ChatTIRLlama(
        api_key=TEST_KEY, base_url=emulator.base_url, rate_limiter=limiter, max_in_flight=4
    )
    started = time.monotonic()
    llm.batch(["hi"] * 6)
    assert time.monotonic() - started >= 0.2  # LangChain's limiter spaced them
    assert len(emulator.requests) == 6
