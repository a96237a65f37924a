"""The engines under our own pools: client CPU per chat request, sync and async.

`ChatClient(..., engine="httpx")` against the default `engine="auto"` (urllib3 for sync calls,
aiohttp for async ones): `create` one at a time, a stream of 500 chunks, and `acreate` at 1, 8
and 32 requests in flight on one event loop, the server (`benchmarks/server.py`, its own
process) answering at once. CPU is this process's (`time.process_time`) over the timed
requests, after a warm-up; rounds interleave the engines and the medians are reported with
their spread.

    python benchmarks/bench_engine.py            # the full run (about two minutes)
    python benchmarks/bench_engine.py --smoke    # one short round: checks it runs
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server import serving

from tir_transport import ChatClient, TIRConfig, build_payload

ENGINES = ("httpx", "auto")
PAYLOAD = build_payload([{"role": "user", "content": "hi"}], "llama3_1_8b_instruct")
CHUNKS = 500
STREAM = build_payload(
    [{"role": "user", "content": "hi"}], "llama3_1_8b_instruct", stream=True, max_tokens=CHUNKS
)


def new_client(base_url: str, engine: Any) -> ChatClient:
    return ChatClient(TIRConfig.from_env(api_key="k" * 40, base_url=base_url), engine=engine)


def async_round(base_url: str, engine: Any, in_flight: int, requests: int) -> float:
    """CPU ms a request of `requests` async chat requests, `in_flight` at once."""
    client = new_client(base_url, engine)

    async def run() -> float:
        slots = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with slots:
                await client.acreate(PAYLOAD)

        await asyncio.gather(*[one() for _ in range(in_flight * 2)])  # warm: pool, caches
        cpu = time.process_time()
        await asyncio.gather(*[one() for _ in range(requests)])
        return (time.process_time() - cpu) / requests * 1000

    return asyncio.run(run())


def async_at(base_url: str, in_flight: int, requests: int, engine: str) -> float:
    """`async_round`, the engine last (for `interleaved`)."""
    return async_round(base_url, engine, in_flight, requests)


def sync_round(base_url: str, engine: Any, call: Callable[[ChatClient], object], n: int) -> float:
    """CPU ms a call of `n` sync calls, one at a time."""
    client = new_client(base_url, engine)
    call(client)  # warm: pool, caches
    cpu = time.process_time()
    for _ in range(n):
        call(client)
    client.close()
    return (time.process_time() - cpu) / n * 1000


def interleaved(rounds: int, measure: Callable[[str], float]) -> dict[str, list[float]]:
    """`measure(engine)` for every engine, `rounds` times, the order alternating."""
    cpu: dict[str, list[float]] = {engine: [] for engine in ENGINES}
    for number in range(rounds):
        for engine in ENGINES if number % 2 == 0 else ENGINES[::-1]:
            cpu[engine].append(measure(engine))
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one short round")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    rounds, requests, calls, streams = (1, 64, 20, 2) if args.smoke else (7, 2000, 1000, 40)
    found: dict[str, dict[str, list[float]]] = {}
    with serving() as base_url:
        found["create"] = interleaved(
            rounds, lambda e: sync_round(base_url, e, lambda c: c.create(PAYLOAD), calls)
        )
        found[f"stream {CHUNKS} chunks"] = interleaved(
            rounds,
            lambda e: sync_round(base_url, e, lambda c: deque(c.stream(STREAM), maxlen=0), streams),
        )
        for in_flight in (1, 8, 32):
            found[f"acreate x{in_flight}"] = interleaved(
                rounds, functools.partial(async_at, base_url, in_flight, requests)
            )
    results: dict[str, dict[str, Any]] = {}
    for case, cpu in found.items():
        for engine in ENGINES:
            values = sorted(cpu[engine])
            results[f"{engine}: {case}"] = {
                "cpu_ms_per_request": statistics.median(values),
                "min": values[0],
                "max": values[-1],
            }
    print(f"{'engine: case':<32} {'CPU ms/request (median [min-max])':>36}")
    for case, r in results.items():
        spread = f"{r['cpu_ms_per_request']:.3f} [{r['min']:.3f}-{r['max']:.3f}]"
        print(f"{case:<32} {spread:>36}")
    if args.json:
        args.json.write_text(json.dumps({"cases": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
