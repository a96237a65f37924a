"""The async engines under our own pools: client CPU per chat request, many in flight.

`ChatClient(..., engine="httpx")` against `engine="aiohttp"` (what bulk jobs' actors run on),
`acreate` at 1, 8 and 32 requests in flight on one event loop, the server
(`benchmarks/server.py`, its own process) answering at once. CPU is this process's
(`time.process_time`) over the timed requests, after a warm-up; rounds interleave the engines
and the medians are reported with their spread.

    python benchmarks/bench_engine.py            # the full run (about a minute)
    python benchmarks/bench_engine.py --smoke    # one short round: checks it runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server import serving

from tir_transport import ChatClient, TIRConfig, build_payload

ENGINES = ("httpx", "aiohttp")
PAYLOAD = build_payload([{"role": "user", "content": "hi"}], "llama3_1_8b_instruct")


def one_round(base_url: str, engine: Any, in_flight: int, requests: int) -> tuple[float, float]:
    """(CPU ms a request, wall seconds) of `requests` async chat requests, `in_flight` at once."""
    client = ChatClient(TIRConfig.from_env(api_key="k" * 40, base_url=base_url), engine=engine)

    async def run() -> tuple[float, float]:
        slots = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with slots:
                await client.acreate(PAYLOAD)

        await asyncio.gather(*[one() for _ in range(in_flight * 2)])  # warm: pool, caches
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*[one() for _ in range(requests)])
        return (time.process_time() - cpu) / requests * 1000, time.perf_counter() - wall

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one short round")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    rounds, requests = (1, 64) if args.smoke else (5, 2000)
    results: dict[str, dict[str, Any]] = {}
    with serving() as base_url:
        for in_flight in (1, 8, 32):
            cpu: dict[str, list[float]] = {engine: [] for engine in ENGINES}
            for number in range(rounds):
                order = ENGINES if number % 2 == 0 else ENGINES[::-1]
                for engine in order:
                    cpu[engine].append(one_round(base_url, engine, in_flight, requests)[0])
            for engine in ENGINES:
                values = sorted(cpu[engine])
                results[f"{engine} x{in_flight}"] = {
                    "cpu_ms_per_request": statistics.median(values),
                    "min": values[0],
                    "max": values[-1],
                }
    print(f"{'engine, in flight':<20} {'CPU ms/request (median [min-max])':>36}")
    for case, r in results.items():
        spread = f"{r['cpu_ms_per_request']:.3f} [{r['min']:.3f}-{r['max']:.3f}]"
        print(f"{case:<20} {spread:>36}")
    if args.json:
        args.json.write_text(json.dumps({"cases": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
