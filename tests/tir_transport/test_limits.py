"""Client-side limits: the pure pacer and back-off, and limits held at the emulator."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import threading
import time
from typing import Any

import pytest
from langchain_core.rate_limiters import InMemoryRateLimiter

from langchain_tir import ChatTIRLlama, TIREmbeddings
from llama_index_tir import TIREmbedding, TIRLlamaLLM
from tests.conftest import TEST_KEY
from tests.support.emulator import WAIT_SECONDS, Emulator, Reply
from tests.support.timing import CLOCK_EPSILON, assert_token_bucket
from tir_transport import ChatClient, RateLimitError, TIRConfig, build_payload
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


def test_a_token_given_back_is_a_send_time_freed() -> None:
    pacer = RatePacer(60)  # 1 a second, bursts of 1
    assert pacer.reserve(now=0.0) == 0.0
    assert pacer.reserve(now=0.0) == pytest.approx(1.0)
    pacer.refund()  # that one was cancelled while it waited
    assert pacer.reserve(now=0.0) == pytest.approx(1.0)  # not 2.0


# -- at the emulator --------------------------------------------------------------------------
# These depend on concurrency and time: `make test-stress` runs them beside busy processes.
# They bound what the code promises (a peak of requests in flight, the token bucket's earliest
# send times, a pause of at least Retry-After) rather than how long a busy machine takes.

timing = pytest.mark.timing


def client(emulator: Emulator, **limits: Any) -> ChatClient:
    config = TIRConfig.from_env(api_key=TEST_KEY, base_url=emulator.base_url, timeout=10)
    return ChatClient(config, limits=Limits(**limits))


BODY = build_payload([{"role": "user", "content": "hi"}], "m")


@timing
def test_max_in_flight_async(emulator: Emulator) -> None:
    # The first three answer only together: a peak of 3 is certain when the client allows 3.
    emulator.queue(*[Reply(hold_until_in_flight=3)] * 3, *[Reply(delay=0.05)] * 9)
    tir = client(emulator, max_in_flight=3)

    async def run() -> None:
        await asyncio.gather(*(tir.acreate(BODY) for _ in range(12)))

    asyncio.run(run())
    assert emulator.max_in_flight == 3


@timing
def test_max_in_flight_sync_threads_and_streams(emulator: Emulator) -> None:
    emulator.queue(*[Reply(hold_until_in_flight=2)] * 2, *[Reply(delay=0.02)] * 6)
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


@timing
def test_requests_per_minute_are_paced(emulator: Emulator) -> None:
    tir = client(emulator, requests_per_minute=1200)  # 20 per second, bursts of 20
    # The burst is there: the first 20 answer only when all 20 are in flight at once.
    emulator.queue(*[Reply(hold_until_in_flight=20)] * 20)

    async def run() -> None:
        await asyncio.gather(*(tir.acreate(BODY) for _ in range(50)))

    started = time.monotonic()
    asyncio.run(run())
    starts = emulator.starts(50)
    assert len(starts) == 50
    assert emulator.max_in_flight >= 20
    # Then one every 50 ms: the 50th no earlier than 1.5 s after the start.
    assert_token_bucket(starts, started, 20, 20.0)


def paused(tir: ChatClient) -> bool:
    """Whether the client has taken in a Retry-After (its shared back-off is on)."""
    return tir.limits.backoff.wait() > 0


async def until_paused(tir: ChatClient) -> None:
    # The 429 is read on this same event loop: yield to it until the client has taken it in.
    deadline = time.monotonic() + WAIT_SECONDS
    while not paused(tir):
        assert time.monotonic() < deadline, "the client never paused after the 429"
        await asyncio.sleep(0.001)


def the_429_went_out_at(emulator: Emulator) -> float:
    return next(at for at, status in emulator.sent if status == 429)


@timing
def test_a_429_pauses_every_request_of_the_client(emulator: Emulator) -> None:
    emulator.queue(Reply(status=429, headers={"retry-after": "0.6"}))
    tir = client(emulator)

    async def run() -> None:
        first = asyncio.ensure_future(tir.acreate(BODY))
        await until_paused(tir)  # the 429 has come back; the first is waiting to retry
        await asyncio.gather(*(tir.acreate(BODY) for _ in range(5)))
        await first

    asyncio.run(run())
    assert emulator.statuses() == [429] + [200] * 6
    # The five later requests (and the retry) were sent only after the pause, not into the
    # wall: no earlier than Retry-After past the moment the 429 left the emulator.
    later = emulator.starts(7)[1:]
    assert min(later) >= the_429_went_out_at(emulator) + 0.6 - CLOCK_EPSILON


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_retry_after_beyond_the_policy_holds_nobody(emulator: Emulator, mode: str) -> None:
    # The policy gives up on a Retry-After over 60 s at once; the pause was still taken in,
    # and every later call of the object slept out the quota's five minutes without a word.
    emulator.queue(Reply(status=429, headers={"retry-after": "300"}, message="quota"))
    tir = client(emulator)
    with pytest.raises(RateLimitError, match="quota"):
        tir.create(BODY) if mode == "sync" else asyncio.run(tir.acreate(BODY))
    assert not paused(tir)
    started = time.monotonic()
    tir.create(BODY) if mode == "sync" else asyncio.run(tir.acreate(BODY))
    assert time.monotonic() - started < WAIT_SECONDS
    assert emulator.statuses() == [429, 200]


def test_cancelled_waiters_give_their_send_times_back(emulator: Emulator) -> None:
    # Callers behind wait_for (a web handler's deadline) that give up before their send time:
    # the next request waited for all of them (28 s here at 1 a second).
    tir = client(emulator, requests_per_minute=60)

    async def run() -> float:
        waiting = [asyncio.ensure_future(tir.acreate(BODY)) for _ in range(20)]
        await asyncio.sleep(0.3)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        started = time.monotonic()
        await tir.acreate(BODY)
        return time.monotonic() - started

    waited = asyncio.run(run())
    assert len(emulator.requests) == 2  # the first, sent at once, and the last
    assert waited < 3.0, waited


def test_a_forked_child_gets_its_own_slots(emulator: Emulator) -> None:
    # Forked while another thread held the only slot: that thread does not exist in the
    # child, and the child's first request waited for its slot for ever.
    emulator.queue(Reply(stall_after=0, stall_seconds=3.0))
    tir = client(emulator, max_in_flight=1, requests_per_minute=6000)
    holder = threading.Thread(target=lambda: tir.create(BODY), daemon=True)
    holder.start()
    emulator.wait_until(lambda: len(emulator.requests) == 1, "the held request")
    pid = os.fork()
    if pid == 0:  # the child: one request; killed by the alarm if it hangs
        signal.alarm(10)
        code = 1
        try:
            tir.create(BODY)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # answered: no error, no alarm
    holder.join()
    assert len(emulator.requests) == 3


@timing
def test_sync_429_pause_is_shared_too(emulator: Emulator) -> None:
    emulator.queue(Reply(status=429, headers={"retry-after": "0.5"}))
    tir = client(emulator)
    first = threading.Thread(target=lambda: tir.create(BODY))
    first.start()
    emulator.wait_until(lambda: 429 in emulator.statuses(), "the 429 sent")
    deadline = time.monotonic() + WAIT_SECONDS
    while not paused(tir):  # the other thread reads the 429 and pauses the client
        assert time.monotonic() < deadline, "the client never paused after the 429"
        time.sleep(0.001)
    tir.create(BODY)
    first.join()
    assert emulator.statuses() == [429, 200, 200]
    later = emulator.starts(3)[1:]
    assert min(later) >= the_429_went_out_at(emulator) + 0.5 - CLOCK_EPSILON


@timing
@pytest.mark.parametrize("framework", ["langchain", "llamaindex"])
def test_adapters_expose_the_limits(emulator: Emulator, framework: str) -> None:
    emulator.queue(*[Reply(hold_until_in_flight=2)] * 2, *[Reply(delay=0.05)] * 4)
    options = {"api_key": TEST_KEY, "base_url": emulator.base_url, "max_in_flight": 2}

    async def run() -> None:
        if framework == "langchain":
            await ChatTIRLlama(**options).abatch(["hi"] * 6)
        else:
            llm = TIRLlamaLLM(**options)
            await asyncio.gather(*(llm.acomplete("hi") for _ in range(6)))

    asyncio.run(run())
    assert emulator.max_in_flight == 2


@timing
@pytest.mark.parametrize("framework", ["langchain", "llamaindex"])
def test_embedding_adapters_expose_the_limits(emulator: Emulator, framework: str) -> None:
    emulator.embed_delay = 0.03
    emulator.queue_embeddings(*[Reply(hold_until_in_flight=2)] * 2)
    options = {"api_key": TEST_KEY, "base_url": emulator.base_url, "model": "e5"}
    texts = [f"text {i}" for i in range(40)]
    if framework == "langchain":
        TIREmbeddings(**options, batch_size=4, max_in_flight=2).embed_documents(texts)
    else:
        TIREmbedding(**options, embed_batch_size=4, max_in_flight=2).get_text_embedding_batch(texts)
    assert emulator.max_in_flight == 2


@timing
def test_langchain_rate_limiter_still_works_beside(emulator: Emulator) -> None:
    limiter = InMemoryRateLimiter(requests_per_second=20, check_every_n_seconds=0.01)
    llm = ChatTIRLlama(
        api_key=TEST_KEY, base_url=emulator.base_url, rate_limiter=limiter, max_in_flight=4
    )
    started = time.monotonic()
    llm.batch(["hi"] * 6)
    assert len(emulator.requests) == 6
    # LangChain's limiter spaced them: it starts empty and lets one through every 50 ms.
    starts = emulator.starts(6)
    assert_token_bucket(starts, started, 0, 20.0)
