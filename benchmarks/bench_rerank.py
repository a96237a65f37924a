"""`make bench`, rerank: 1,000 documents in batches of 32, ours against what the wire allows.

1. Wall time, the server answering each request after 20 ms (TIR's latency stands in): the
   core client and both adapters, sync and async (one event loop, as an async app has),
   against the latency-bound ideal, ceil(batches / in flight) x 20 ms, at the default 8 in
   flight and at 32 (all at once); raw httpx on as many threads runs beside them, for scale.
2. Client CPU per document, the server answering at once: ours against a raw-httpx floor that
   sends the same requests and reads the same replies (JSON parsed, indices mapped back, one
   sort), one request after another and spread over 8 threads. CPU is this process's
   (`time.process_time`); the server runs in its own process.

The server is `benchmarks/server.py` (a raw asyncio protocol, in its own process), answering
vLLM's rerank format (every result with its document text, sorted by score, cut to `top_n`)
after `--delay-ms`, so it is never the bottleneck.

    python benchmarks/bench_rerank.py            # the full run (about half a minute)
    python benchmarks/bench_rerank.py --smoke    # one short round: checks it runs
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from server import serving

KEY = "bench-key"
MODEL = "reranker"
BATCH = 32
LATENCY = 0.020
QUERY = "which passage mentions the lazy dog"


# -- contenders: each reranks `docs` and returns the best indices --------------------------------

Run = Callable[[list[str]], list[int]]


def documents(count: int) -> list[str]:
    return [f"passage {i}: the quick brown fox jumps over the lazy dog" for i in range(count)]


# The async contenders run in one event loop, as an async app does: its connections stay open
# from one call to the next (a new loop per call would time connection setup instead).
LOOP = asyncio.Runner()

# What every round reranks (a prefix of it: a warm-up batch, the smoke run, the full run).
DOCS = documents(1_000)
SIZES = (BATCH, 200, 1_000)


def ours_core(url: str, is_async: bool, in_flight: int) -> Run:
    from tir_transport import RerankClient

    client = RerankClient.from_env(
        api_key=KEY, base_url=url, model=MODEL, batch_size=BATCH, max_concurrency=in_flight
    )
    if is_async:
        return lambda docs: [r.index for r in LOOP.run(client.arerank(QUERY, docs, top_n=5))]
    return lambda docs: [r.index for r in client.rerank(QUERY, docs, top_n=5)]


def ours_langchain(url: str, is_async: bool, in_flight: int) -> Run:
    from langchain_core.documents import Document

    from langchain_tir import TIRRerank

    reranker = TIRRerank(
        api_key=KEY,
        base_url=url,
        model=MODEL,
        batch_size=BATCH,
        max_concurrency=in_flight,
        top_n=5,
    )

    # The framework's objects are the caller's: made before the clock starts.
    made = {n: [Document(page_content=d, id=str(i)) for i, d in enumerate(DOCS[:n])] for n in SIZES}

    def run(docs: list[str]) -> list[int]:
        given = made[len(docs)]
        if is_async:
            kept = LOOP.run(reranker.acompress_documents(given, QUERY))
        else:
            kept = reranker.compress_documents(given, QUERY)
        return [int(d.id or -1) for d in kept]

    return run


def ours_llama_index(url: str, is_async: bool, in_flight: int) -> Run:
    from llama_index.core.schema import NodeWithScore, TextNode

    from llama_index_tir import TIRRerank

    reranker = TIRRerank(
        api_key=KEY,
        base_url=url,
        model=MODEL,
        batch_size=BATCH,
        max_concurrency=in_flight,
        top_n=5,
    )

    made = {
        n: [NodeWithScore(node=TextNode(text=d, id_=str(i))) for i, d in enumerate(DOCS[:n])]
        for n in SIZES
    }

    def run(docs: list[str]) -> list[int]:
        given = made[len(docs)]
        if is_async:
            kept = LOOP.run(reranker.apostprocess_nodes(given, query_str=QUERY))
        else:
            kept = reranker.postprocess_nodes(given, query_str=QUERY)
        return [int(n.node.node_id) for n in kept]

    return run


def floor(url: str, threads: int = 1) -> Run:
    """Raw httpx: the same requests (each batch's best 5), replies parsed, indices mapped back,
    one sort."""
    client = httpx.Client(headers={"Authorization": f"Bearer {KEY}"})

    def one(start: int, batch: list[str]) -> list[tuple[float, int]]:
        body = {"model": MODEL, "query": QUERY, "documents": batch, "top_n": 5}
        reply = json.loads(client.post(f"{url}/rerank", json=body).content)
        return [(-r["relevance_score"], start + r["index"]) for r in reply["results"]]

    def run(docs: list[str]) -> list[int]:
        parts = [(s, docs[s : s + BATCH]) for s in range(0, len(docs), BATCH)]
        threads_now = min(threads, len(parts))
        if threads == 1:
            scored = [p for s, b in parts for p in one(s, b)]
        else:
            with ThreadPoolExecutor(threads_now) as pool:
                scored = [p for ps in pool.map(lambda sb: one(*sb), parts) for p in ps]
        scored.sort()
        return [i for _, i in scored[:5]]

    return run


# -- measuring ------------------------------------------------------------------------------------


def rounds(
    contenders: dict[str, Run], docs: list[str], n: int, clock: Callable[[], float]
) -> dict[str, float]:
    """Median per contender over `n` alternating rounds (after one warm-up each)."""
    expected: list[int] | None = None
    for run in contenders.values():
        run(docs[:BATCH])
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(n):
        for name, run in contenders.items():
            gc.collect()
            started = clock()
            best = run(docs)
            times[name].append(clock() - started)
            # Every contender must find the same five: a fast wrong answer is no result.
            expected = expected or best
            assert best == expected, (name, best, expected)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="one short round: checks it runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    # 30 rounds, as the chat bench: with all 32 in flight the wall time of 7 rounds spread from
    # 1.50 to 1.76 x the ideal between runs minutes apart (2026-12-07).
    count, n = (200, 1) if args.smoke else (1_000, 30)
    docs = DOCS[:count]
    batches = math.ceil(count / BATCH)
    report: dict[str, Any] = {
        "documents": count,
        "batch": BATCH,
        "latency_ms": LATENCY * 1000,
        "wall_seconds": {},
        "ideal_seconds": {},
        "cpu_us_per_document": {},
    }
    with serving("--delay-ms", str(LATENCY * 1000)) as url:
        for in_flight in (8, 32):
            # Raw httpx on as many threads: what the wire allows a Python client, for scale.
            contenders: dict[str, Run] = {f"floor, {in_flight} threads": floor(url, in_flight)}
            for kind in ("sync", "async"):
                is_async = kind == "async"
                contenders[f"core {kind}"] = ours_core(url, is_async, in_flight)
                contenders[f"langchain {kind}"] = ours_langchain(url, is_async, in_flight)
                contenders[f"llama_index {kind}"] = ours_llama_index(url, is_async, in_flight)
            medians = rounds(contenders, docs, n, time.perf_counter)
            report["wall_seconds"][str(in_flight)] = medians
            report["ideal_seconds"][str(in_flight)] = math.ceil(batches / in_flight) * LATENCY
    with serving() as url:
        cpu = rounds(
            {
                "floor": floor(url),
                "floor, 8 threads": floor(url, threads=8),
                "core ours, 1 in flight": ours_core(url, False, 1),
                "core ours, 8 in flight": ours_core(url, False, 8),
                "langchain ours, 8 in flight": ours_langchain(url, False, 8),
                "llama_index ours, 8 in flight": ours_llama_index(url, False, 8),
            },
            docs,
            n,
            time.process_time,
        )
        report["cpu_us_per_document"] = {name: s / count * 1e6 for name, s in cpu.items()}
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    LOOP.close()
    return 0


def print_report(report: dict[str, Any]) -> None:
    print(
        f"{report['documents']} documents, batches of {report['batch']}, server latency "
        f"{report['latency_ms']:.0f} ms"
    )
    for in_flight, medians in report["wall_seconds"].items():
        ideal = report["ideal_seconds"][in_flight]
        print(f"{in_flight} in flight: ideal {ideal * 1000:.0f} ms")
        for case, seconds in medians.items():
            print(f"  {case:20} {seconds * 1000:7.1f} ms  /ideal {seconds / ideal:5.2f}")
    cpu = report["cpu_us_per_document"]
    print("client CPU per document, no latency (ratio: to the floor of the same concurrency)")
    for name, us in cpu.items():
        base = (
            cpu["floor"] if ("1 in flight" in name or name == "floor") else cpu["floor, 8 threads"]
        )
        print(f"  {name:32} {us:7.2f} us  /floor {us / base:5.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
