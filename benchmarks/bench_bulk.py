"""`make bench`, bulk: ray_tir rows per second against a server that answers after 50 ms.

1 and 2 actors x `max_in_flight` 1, 8, 32, beside the latency-bound ideal (actors x in flight
/ 50 ms), on a local Ray; and the same prompts through `ChatOpenAI.abatch(max_concurrency=32)`
in one process, the peer. Each case's rows are sized for about 5 s at the ideal rate.

Two rates per case, each as a share of the ideal: the whole job's (actors' start included:
that is what a user waits for; Ray's fixed start of 1.5-2.5 s weighs on a 5 s job), and the
served rate, rows over the time from the first request the server got to the last reply it
sent (how well the actors keep their requests in flight once they run). Each case runs
`--repeat` times; the report gives the medians, and every run.

    python benchmarks/bench_bulk.py            # the full run (a few minutes)
    python benchmarks/bench_bulk.py --long     # and a 2 x 32 job of 60 s of ideal work
    python benchmarks/bench_bulk.py --case 2x32 --repeat 1   # one shape, once
    python benchmarks/bench_bulk.py --smoke    # tiny jobs: checks it runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from server import serving, stats

KEY = "bench-key"
LATENCY = 0.05
SHAPES = [(a, f) for a in (1, 2) for f in (1, 8, 32)]
SMOKE_SHAPES = [(1, 1), (2, 8)]
LONG_SHAPE = (2, 32)
LONG_SECONDS = 60.0

# Ray on loopback only (before Ray is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def ours(
    url: str, actors: int, in_flight: int, rows: int, rpm: float | None = None
) -> tuple[float, float]:
    """One job of `rows` rows; when it started and ended (`time.perf_counter`)."""
    import ray.data

    import ray_tir

    ds = ray.data.from_items(
        [{"id": i, "prompt": f"question {i}"} for i in range(rows)], override_num_blocks=16
    )
    started = time.perf_counter()
    out = ray_tir.chat(
        ds,
        api_key=KEY,
        base_url=url,
        concurrency=actors,
        max_in_flight=in_flight,
        requests_per_minute=rpm,
    ).take_all()
    ended = time.perf_counter()
    assert len(out) == rows and not any(r["error"] for r in out), "rows lost or failed"
    return started, ended


def peer(url: str, rows: int) -> tuple[float, float]:
    """The peer's `rows` prompts; when they started and ended."""
    from langchain_openai import ChatOpenAI

    connection: dict[str, Any] = {"api_key": KEY, "base_url": url}
    llm = ChatOpenAI(**connection, model="m")
    prompts: list[Any] = [f"question {i}" for i in range(rows)]
    started = time.perf_counter()
    replies = asyncio.run(llm.abatch(prompts, config={"max_concurrency": 32}))
    ended = time.perf_counter()
    assert len(replies) == rows
    return started, ended


def measure(
    url: str,
    run: Callable[[], tuple[float, float]],
    rows: int,
    ideal: float,
    repeat: int,
    *,
    exact: bool = True,
) -> Any:
    """`run` `repeat` times: each run's two rates, and their medians, beside the ideal.

    Each run also says where the rest of its time went: before the first request
    (`start_s`: Ray's actors starting) and after the last reply (`end_s`); and how long the
    server really held a request (`server_ms`: the latency, and the server's own lateness).
    """
    stats(url)  # what came before is not this case's
    runs = []
    for _ in range(repeat):
        started, ended = run()
        served = stats(url)
        # Ours sends each row once; the peer may retry (openai's own retries), said per run.
        assert not exact or served["requests"] == rows, ("requests", served["requests"], rows)
        runs.append(
            {
                "rows_per_s": rows / (ended - started),
                "served_rows_per_s": rows / served["seconds"],
                "start_s": served["first"] - started,
                "end_s": ended - served["last"],
                "server_ms": served["held"] / rows * 1000,
                "requests": served["requests"],
            }
        )
    whole = statistics.median(r["rows_per_s"] for r in runs)
    serving_rate = statistics.median(r["served_rows_per_s"] for r in runs)
    return {
        "rows": rows,
        "ideal": ideal,
        "rows_per_s": whole,
        "share": whole / ideal,
        "served_rows_per_s": serving_rate,
        "served_share": serving_rate / ideal,
        "runs": runs,
    }


def shape(text: str) -> tuple[int, int]:
    actors, _, in_flight = text.partition("x")
    return int(actors), int(in_flight)


def name(actors: int, in_flight: int) -> str:
    return f"{actors} actor(s) x {in_flight} in flight"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny jobs: checks it runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--repeat", type=int, help="runs of each case (default 3; smoke 1)")
    parser.add_argument(
        "--case", type=shape, action="append", help="only this shape, as 2x32 (repeatable)"
    )
    parser.add_argument("--no-peer", action="store_true", help="leave the peer out")
    parser.add_argument(
        "--requests-per-minute",
        type=float,
        help="ours with this job-wide limit (one far above the ideal costs only the pacer)",
    )
    parser.add_argument(
        "--long", action="store_true", help=f"also a {LONG_SECONDS:.0f} s job at 2 x 32"
    )
    parser.add_argument(
        "--only-long", action="store_true", help="the long job alone (no shapes, no peer)"
    )
    args = parser.parse_args()
    import ray

    # A Ray of its own: never one that another process started on this machine (`ray start`).
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    cases = args.case or (SMOKE_SHAPES if args.smoke else SHAPES)
    if args.only_long:
        cases = []
    repeat = args.repeat or (1 if args.smoke else 3)
    seconds = 0.5 if args.smoke else 5.0
    rpm = args.requests_per_minute
    report: dict[str, Any] = {
        "latency_ms": LATENCY * 1000,
        "repeat": repeat,
        "requests_per_minute": rpm,
        "cases": {},
    }
    try:
        with serving("--chat-delay-ms", str(LATENCY * 1000)) as url:
            for actors, in_flight in cases:
                ideal = actors * in_flight / LATENCY
                rows = max(10, int(ideal * seconds))
                report["cases"][name(actors, in_flight)] = measure(
                    url, partial(ours, url, actors, in_flight, rows, rpm), rows, ideal, repeat
                )
            if not (args.no_peer or args.only_long):
                rows = 64 if args.smoke else 3200
                report["peer"] = measure(
                    url, partial(peer, url, rows), rows, 32 / LATENCY, repeat, exact=False
                )
            if args.long or args.only_long:
                actors, in_flight = LONG_SHAPE
                ideal = actors * in_flight / LATENCY
                rows = int(ideal * LONG_SECONDS)
                job = partial(ours, url, actors, in_flight, rows, rpm)
                long_case = measure(url, job, rows, ideal, 1)
                report["long"] = {"case": name(actors, in_flight), **long_case}
    finally:
        ray.shutdown()
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def print_report(report: dict[str, Any]) -> None:
    print(
        f"server latency {report['latency_ms']:.0f} ms; rows/s, medians of {report['repeat']} "
        "run(s): the whole job's, and served (first request to last reply); share of the ideal"
    )
    if report["requests_per_minute"]:
        print(f"ours with requests_per_minute={report['requests_per_minute']:g}")
    rows = dict(report["cases"])
    if "peer" in report:
        rows["ChatOpenAI.abatch(32), 1 process"] = report["peer"]
    if "long" in report:
        rows[f"{report['long']['case']}, {LONG_SECONDS:.0f} s, 1 run"] = report["long"]
    for case, r in rows.items():
        print(
            f"  {case:34} whole {r['rows_per_s']:7.1f} ({r['share']:4.0%})  served "
            f"{r['served_rows_per_s']:7.1f} ({r['served_share']:4.0%})  ideal {r['ideal']:5.0f}"
            f"  {r['rows']} rows"
        )
        starts = ", ".join(f"{run['start_s']:.1f}/{run['end_s']:.1f}" for run in r["runs"])
        print(f"  {'':34} seconds before the first request/after the last reply: {starts}")
        held = ", ".join(f"{run['server_ms']:.1f}" for run in r["runs"])
        print(f"  {'':34} ms the server held a request (arrival to reply): {held}")


if __name__ == "__main__":
    raise SystemExit(main())
