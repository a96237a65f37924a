"""ray_tir against the emulator on a real local Ray: faults, killed actors, limits, resume."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.data
import ray.exceptions

import ray_tir
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply, embed_vector
from tests.support.timing import CLOCK_EPSILON, assert_paced_spread
from tir_transport import ConfigurationError

pytestmark = pytest.mark.usefixtures("ray_local")


def dataset(items: list[dict[str, Any]]) -> ray.data.Dataset:
    # A few blocks, as a file read gives, rather than one block per row.
    return ray.data.from_items(items, override_num_blocks=8)


def rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": i, "prompt": f"question {i}", "lang": "en"} for i in range(start, count)]


# The longest a job may take after an actor was killed (Ray restarts it); not a measurement.
JOB_SECONDS = 120
# How long the event loop is kept busy, so that an answer is read after its send time: past
# the late limit (_JobPacerClient.LATE, 0.05 s) by far, and past the next send time (1 s).
BUSY_LOOP_SECONDS = 1.3


def options(emulator: Emulator, **extra: Any) -> dict[str, Any]:
    return {"api_key": TEST_KEY, "base_url": emulator.base_url, "max_tokens": 4, **extra}


def test_2000_rows_with_faults_lose_none_and_duplicate_none(emulator: Emulator) -> None:
    emulator.fault_every = 20  # 5%: 429s, 503s and dropped connections, in turn
    ds = dataset(rows(2000))
    out = ray_tir.chat(ds, **options(emulator, max_retries=6), concurrency=2, max_in_flight=16)
    result = out.take_all()
    assert sorted(r["id"] for r in result) == list(range(2000))
    assert all(r["error"] is None for r in result), [r["error"] for r in result if r["error"]][:3]
    assert all(r["response"] == "Hello. How can" and r["lang"] == "en" for r in result)
    assert emulator.faults_sent >= 100
    totals = ray_tir.usage(result)
    assert totals["rows"] == 2000 and totals["rows_without_usage"] == 0
    assert totals["usage"].output_tokens == 2000 * 4


def test_a_row_that_keeps_failing_carries_its_error(emulator: Emulator) -> None:
    emulator.max_context = 30
    items = rows(40)
    items[17]["prompt"] = "word " * 100
    result = ray_tir.chat(dataset(items), **options(emulator)).take_all()
    by_id = {r["id"]: r for r in result}
    assert by_id[17]["error"].startswith("ContextLengthExceededError: This model's maximum")
    assert by_id[17]["response"] is None and by_id[17]["input_tokens"] is None
    assert all(r["error"] is None for i, r in by_id.items() if i != 17)
    assert all(TEST_KEY not in (r["error"] or "") for r in result)


def test_messages_column_and_system_prompt(emulator: Emulator) -> None:
    items = [{"messages": [{"role": "user", "content": f"hi {i}"}]} for i in range(3)]
    ray_tir.chat(
        dataset(items),
        messages_column="messages",
        system="Be brief.",
        temperature=0.1,
        **options(emulator),
    ).take_all()
    bodies = [r.json for r in emulator.requests]
    assert all(b["messages"][0] == {"role": "system", "content": "Be brief."} for b in bodies)
    assert all(b["temperature"] == 0.1 and b["max_tokens"] == 4 for b in bodies)


def test_missing_settings_fail_before_the_job() -> None:
    with pytest.raises(ConfigurationError, match="TIR_API_KEY"):
        ray_tir.chat(dataset(rows(2)))
    with pytest.raises(ConfigurationError, match="TIR_EMBEDDING_MODEL"):
        ray_tir.embed(dataset([{"text": "a"}]), api_key=TEST_KEY, base_url="http://x")


def test_rows_that_do_not_fit_the_job_are_refused_before_any_request(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match=r"no column 'prompt' .*'question'.*prompt_column=\.\.\."):
        ray_tir.chat(dataset([{"question": "hi"}]), **options(emulator))
    # The output of an earlier job, sent through again: its columns would be added twice.
    earlier = [{"prompt": "hi", "response": "Hello", "error": None}]
    with pytest.raises(ValueError, match=r"already have the column\(s\) 'response', 'error'"):
        ray_tir.chat(dataset(earlier), **options(emulator))
    with pytest.raises(ValueError, match=r"no column 'text'.*text_column"):
        ray_tir.embed(
            dataset([{"body": "a"}]), api_key=TEST_KEY, base_url=emulator.base_url, model="e5"
        )
    with pytest.raises(TypeError, match="unknown option"):
        ray_tir.embed(dataset([{"text": "a"}]), **options(emulator, model="e5"))  # max_tokens
    # A schema known only once the job runs: the workers refuse the batch, still before sending
    # (Ray Data wraps the ValueError; its message is kept).
    later = dataset([{"question": "hi"}]).map(lambda row: row)
    with pytest.raises(ray.exceptions.RayTaskError, match="no column 'prompt'"):
        ray_tir.chat(later, **options(emulator)).take_all()
    assert emulator.requests == []


def _worker_pids(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if name in title:
                pids.append(int(entry.name))
    return pids


def test_an_actor_killed_mid_job_loses_no_row(emulator: Emulator) -> None:
    emulator.chat_delay = 0.02
    ds = dataset(rows(600))
    out = ray_tir.chat(ds, **options(emulator), concurrency=2, max_in_flight=4)
    result: list[dict[str, Any]] = []
    job = threading.Thread(target=lambda: result.extend(out.take_all()))
    job.start()
    # Mid-job: a sixth of the rows have been asked for.
    emulator.wait_until(lambda: len(emulator.requests) > 100, "100 requests")
    pids = _worker_pids("_ChatWorker")
    assert pids, "no actor process was found to kill"
    os.kill(pids[0], signal.SIGKILL)
    job.join(JOB_SECONDS)
    assert not job.is_alive(), f"the job did not end within {JOB_SECONDS} s of the kill"
    assert sorted(r["id"] for r in result) == list(range(600))
    assert all(r["error"] is None for r in result)


@pytest.mark.timing
def test_limits_hold_for_the_job(emulator: Emulator) -> None:
    emulator.chat_delay = 0.05
    # The first six answer only together: a peak of 2 actors x 3 is certain when allowed.
    emulator.queue(*[Reply(hold_until_in_flight=6)] * 6)
    ray_tir.chat(dataset(rows(120)), **options(emulator), concurrency=2, max_in_flight=3).take_all()
    assert emulator.max_in_flight == 6


@pytest.mark.timing
def test_requests_per_minute_hold_across_actors(emulator: Emulator) -> None:
    ray_tir.chat(
        dataset(rows(40)),
        **options(emulator),
        concurrency=2,
        max_in_flight=8,
        requests_per_minute=1200,  # 20 per second for the whole job, bursts of 20
    ).take_all()
    starts = emulator.starts(40)
    assert len(starts) == 40
    # 20 at once, then 20 more 50 ms apart: one pacer for the job. A pacer per actor would
    # let 40 go at once (a burst each) and end at once.
    assert_paced_spread(starts, burst=20, per_second=20.0)


def test_resume_pays_for_nothing_twice(emulator: Emulator, tmp_path: Path) -> None:
    output = str(tmp_path / "out")
    ds = dataset(rows(300))
    # A first run that stopped after the first 120 rows were written.
    first_run = ray_tir.chat(ds.filter(lambda r: r["id"] < 120), **options(emulator))
    written = ray_tir.write_output(first_run, output)
    assert ray_tir.usage(written)["rows"] == 120
    first = len(emulator.requests)
    assert first == 120
    todo = ray_tir.pending(ds, output, id_column="id")
    written = ray_tir.write_output(ray_tir.chat(todo, **options(emulator)), output, mode="resume")
    assert len(emulator.requests) - first == 180
    assert ray_tir.usage(written)["rows"] == 180  # what this run paid for
    assert ray_tir.usage(output)["rows"] == 300  # what the folder holds
    ids = pq.read_table(output, columns=["id"]).column(0).to_pylist()
    assert sorted(ids) == list(range(300))
    # Run again when all is done: nothing left, nothing sent.
    assert ray_tir.pending(ds, output, id_column="id").count() == 0


def test_embed_gives_every_row_its_own_vector(emulator: Emulator) -> None:
    emulator.embed_max_tokens = 8
    emulator.fault_every = 25
    items = [{"id": i, "text": f"text number {i}"} for i in range(300)]
    items[5]["text"] = ""
    items[77]["text"] = "far too many words " * 5
    result = ray_tir.embed(
        dataset(items),
        api_key=TEST_KEY,
        base_url=emulator.base_url,
        model="e5",
        batch_size=16,
        max_retries=6,
    ).take_all()
    by_id = {r["id"]: r for r in result}
    assert sorted(by_id) == list(range(300))
    assert by_id[5]["error"].startswith("InputError") and by_id[5]["embedding"] is None
    assert by_id[77]["error"].startswith("ContextLengthExceededError")
    for i, row in by_id.items():
        if i not in (5, 77):
            assert row["error"] is None
            assert list(row["embedding"]) == pytest.approx(embed_vector(row["text"]), abs=1e-6)
    # No token columns to sum: said so, rather than every row "without usage".
    with pytest.raises(ValueError, match="no token columns"):
        ray_tir.usage(result)


def test_arrow_types_are_stable(emulator: Emulator) -> None:
    out = ray_tir.chat(dataset(rows(3)), **options(emulator))
    schema = out.schema()
    assert schema is not None
    types = dict(zip(schema.names, schema.types, strict=True))
    assert types["input_tokens"] == pa.int64() and types["error"] == pa.string()


@pytest.mark.timing
def test_a_send_time_that_arrives_late_is_not_used() -> None:
    from ray_tir._pacing import _JobPacerActor, _JobPacerClient

    pacer = _JobPacerActor.remote(60)  # one per second, a burst of one
    client = _JobPacerClient(pacer, 60)

    async def run() -> tuple[float, float, float, float]:
        first: float = await pacer.reserve.remote()  # the burst: the next time is 1 s later
        reserving = asyncio.ensure_future(client.send_time())
        # One turn of the loop: the client runs to its first await, having sent its request
        # (Ray submits at `.remote()`), and its answer (first + 1) will be read late, after...
        await asyncio.sleep(0)
        time.sleep(BUSY_LOOP_SECONDS)  # noqa: ASYNC251 (on purpose: the loop is busy)
        when = await reserving
        waited = when - time.time()
        after: float = await pacer.reserve.remote()
        return first, when, waited, after

    first, when, waited, after = asyncio.run(run())
    # Used as it came, the late time would squeeze the pace: sent at once, one time taken.
    # Instead it is spent and a new one taken at the end of the queue: the client took two
    # times, so the next is no earlier than three periods after the first (a bucket of one).
    assert when >= first + 2.0 - CLOCK_EPSILON
    assert after - first >= 3.0 - CLOCK_EPSILON
    assert waited <= 1.0  # a fresh time is at most one period ahead


def test_no_request_holds_a_slot_while_it_asks_the_job_pacer() -> None:
    from ray_tir._pacing import _ActorLimits, _job_pacer

    # A pace that never binds: what the pacer costs is its round trip alone.
    limits = _ActorLimits(4, _job_pacer(600_000), lambda: None)
    assert limits.job_pacer is not None
    holding: set[asyncio.Task[Any] | None] = set()
    asked_while: list[tuple[bool, int]] = []  # (the asker holds a slot, slots held by others)
    send_time = limits.job_pacer.send_time

    async def recorded_send_time() -> float:
        me = asyncio.current_task()
        asked_while.append((me in holding, len(holding - {me})))
        return await send_time()

    class RecordedSlots(asyncio.Semaphore):
        async def acquire(self) -> Literal[True]:
            taken = await super().acquire()
            holding.add(asyncio.current_task())
            return taken

        def release(self) -> None:
            holding.discard(asyncio.current_task())
            super().release()

    limits.job_pacer.send_time = recorded_send_time  # type: ignore[method-assign]
    limits.slots = RecordedSlots(4)

    async def request() -> None:
        async with limits.aslot():
            await asyncio.sleep(0.02)

    async def run() -> None:
        await asyncio.gather(*(request() for _ in range(40)))

    asyncio.run(run())
    assert len(asked_while) == 40
    # Never from inside a slot: each request asks, then takes its slot.
    assert not any(own for own, _ in asked_while)
    # And the asking overlaps the other requests in flight (it does not wait for an empty
    # actor): most asks are made while other requests hold slots.
    assert sum(others > 0 for _, others in asked_while) >= 30, asked_while


def test_requests_that_ask_together_share_one_round_trip_to_the_pacer() -> None:
    from ray_tir._pacing import _job_pacer

    client = _job_pacer(600)  # 10 a second, a burst of 10
    assert client is not None
    asked: list[int] = []
    reserve_many = client.pacer.reserve_many

    class Recorded:
        """The pacer actor's method, its calls counted (the real actor answers)."""

        def remote(self, count: int) -> Any:
            asked.append(count)
            return reserve_many.remote(count)

    class Pacer:
        reserve_many = Recorded()

    client.pacer = Pacer()

    async def run() -> list[float]:
        return list(await asyncio.gather(*(client.send_time() for _ in range(20))))

    times = asyncio.run(run())
    # The first asks at once; the 19 that asked while it was out share the next round trip.
    assert asked == [1, 19]
    # Their times in the order they asked: the burst of 10, then 0.1 s apart.
    assert times == sorted(times)
    assert times[-1] - times[0] >= (20 - 10) / 10 - CLOCK_EPSILON
