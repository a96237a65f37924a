"""`make bench`, bulk: ray_tir rows per second against a server that answers after 50 ms.

1 and 2 actors x `max_in_flight` 1, 8, 32, beside the latency-bound ideal (actors x in flight
/ 50 ms), on a local Ray; and the same prompts through `ChatOpenAI.abatch(max_concurrency=32)`
in one process, the peer. Each case's rows are sized for about 5 s at the ideal rate; the time
is the whole job's (actors' start included: that is what a user waits for).

    python benchmarks/bench_bulk.py            # the full run (a few minutes)
    python benchmarks/bench_bulk.py --smoke    # tiny jobs: checks it runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from server import serving

KEY = "bench-key"
LATENCY = 0.05

# Ray on loopback only (before Ray is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def ours(url: str, actors: int, in_flight: int, rows: int) -> float:
    import ray.data

    import ray_tir

    ds = ray.data.from_items(
        [{"id": i, "prompt": f"question {i}"} for i in range(rows)], override_num_blocks=16
    )
    started = time.perf_counter()
    out = ray_tir.chat(
        ds, api_key=KEY, base_url=url, concurrency=actors, max_in_flight=in_flight
    ).take_all()
    elapsed = time.perf_counter() - started
    assert len(out) == rows and not any(r["error"] for r in out), "rows lost or failed"
    return rows / elapsed


def peer(url: str, rows: int) -> float:
    from langchain_openai import ChatOpenAI

    connection: dict[str, Any] = {"api_key": KEY, "base_url": url}
    llm = ChatOpenAI(**connection, model="m")
    prompts: list[Any] = [f"question {i}" for i in range(rows)]
    started = time.perf_counter()
    replies = asyncio.run(llm.abatch(prompts, config={"max_concurrency": 32}))
    elapsed = time.perf_counter() - started
    assert len(replies) == rows
    return rows / elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny jobs: checks it runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    cases = [(1, 1), (2, 8)] if args.smoke else [(a, f) for a in (1, 2) for f in (1, 8, 32)]
    seconds = 0.5 if args.smoke else 5.0
    report: dict[str, Any] = {"latency_ms": LATENCY * 1000, "cases": {}}
    try:
        with serving("--chat-delay-ms", str(LATENCY * 1000)) as url:
            for actors, in_flight in cases:
                ideal = actors * in_flight / LATENCY
                rows = max(10, int(ideal * seconds))
                rate = ours(url, actors, in_flight, rows)
                report["cases"][f"{actors} actor(s) x {in_flight} in flight"] = {
                    "rows": rows,
                    "rows_per_s": rate,
                    "ideal": ideal,
                }
            rows = 64 if args.smoke else 3200
            report["peer"] = {"rows": rows, "rows_per_s": peer(url, rows), "ideal": 32 / LATENCY}
    finally:
        ray.shutdown()
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def print_report(report: dict[str, Any]) -> None:
    print(f"server latency {report['latency_ms']:.0f} ms; rows/s (share of the ideal)")
    for case, r in report["cases"].items():
        print(
            f"  {case:28} {r['rows_per_s']:8.1f}  ideal {r['ideal']:7.0f}  "
            f"({r['rows_per_s'] / r['ideal']:.0%}, {r['rows']} rows)"
        )
    p = report["peer"]
    print(
        f"  {'ChatOpenAI.abatch(32), 1 process':28} {p['rows_per_s']:8.1f}  ideal "
        f"{p['ideal']:7.0f}  ({p['rows_per_s'] / p['ideal']:.0%}, {p['rows']} rows)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
