"""`make bench`, embeddings: our adapters against the peers and a raw-httpx floor.

1. Wall time: 10,000 texts in batches of 64, the server answering each request after 20 ms
   (TIR's latency stands in), ours against `OpenAIEmbeddings(check_embedding_ctx_length=False)`
   and `OpenAILikeEmbedding` at the same batch size, sync and async. Target: ours <= 0.25 x.
2. Client CPU per vector, the server answering at once: ours against a raw-httpx floor that
   sends the same requests and decodes the same base64 replies into lists of floats, one
   request after another and spread over 8 threads (ours has 8 in flight by default, and
   CPython threads cost CPU of their own). Target: ours <= 1.25 x the floor. CPU is this
   process's (`time.process_time`); the server runs in its own process.

    python benchmarks/bench_embeddings.py            # the full run (about a minute)
    python benchmarks/bench_embeddings.py --smoke    # one short round: checks it runs
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import statistics
import time
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from server import serving

KEY = "bench-key"
BATCH = 64


def texts(count: int) -> list[str]:
    return [f"passage {i}: the quick brown fox jumps over the lazy dog" for i in range(count)]


# -- contenders: each returns a function that embeds `docs` and returns the vectors -------------

Run = Callable[[list[str]], list[list[float]]]


def ours_langchain(url: str, is_async: bool) -> Run:
    from langchain_tir import TIREmbeddings

    model = TIREmbeddings(api_key=KEY, base_url=url, model="e5", batch_size=BATCH)
    if is_async:
        return lambda docs: asyncio.run(model.aembed_documents(docs))
    return model.embed_documents


def peer_langchain(url: str, is_async: bool) -> Run:
    from langchain_openai import OpenAIEmbeddings

    # By their aliases, as users write them (the plugin knows only the field names).
    connection: dict[str, Any] = {"api_key": KEY, "base_url": url}
    model = OpenAIEmbeddings(
        **connection, model="e5", chunk_size=BATCH, check_embedding_ctx_length=False
    )
    if is_async:
        return lambda docs: asyncio.run(model.aembed_documents(docs))
    return model.embed_documents


def ours_llama_index(url: str, is_async: bool) -> Run:
    from llama_index_tir import TIREmbedding

    model = TIREmbedding(api_key=KEY, base_url=url, model="e5", embed_batch_size=BATCH)
    if is_async:
        return lambda docs: asyncio.run(model.aget_text_embedding_batch(docs))
    return model.get_text_embedding_batch


def peer_llama_index(url: str, is_async: bool) -> Run:
    from llama_index.embeddings.openai_like import (  # type: ignore[import-untyped]
        OpenAILikeEmbedding,
    )

    model = OpenAILikeEmbedding(model_name="e5", api_key=KEY, api_base=url, embed_batch_size=BATCH)
    if is_async:
        return lambda docs: asyncio.run(model.aget_text_embedding_batch(docs))
    run: Run = model.get_text_embedding_batch
    return run


def floor(url: str, threads: int = 1) -> Run:
    """Raw httpx: the same requests, base64 decoded into lists of floats.

    One after another, or spread over `threads` threads as ours spreads its batches (CPython
    threads cost CPU of their own: the fair floor for a concurrent client is a concurrent one).
    """
    client = httpx.Client(headers={"Authorization": f"Bearer {KEY}"})

    def one(docs: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(docs), BATCH):
            body = {
                "model": "e5",
                "input": docs[start : start + BATCH],
                "encoding_format": "base64",
            }
            reply = json.loads(client.post(f"{url}/embeddings", json=body).content)
            for item in sorted(reply["data"], key=lambda d: d["index"]):
                values = array("f")
                values.frombytes(base64.b64decode(item["embedding"]))
                out.append(values.tolist())
        return out

    if threads == 1:
        return one

    def spread(docs: list[str]) -> list[list[float]]:
        parts = [docs[i : i + BATCH] for i in range(0, len(docs), BATCH)]
        with ThreadPoolExecutor(threads) as pool:
            return [v for vectors in pool.map(one, parts) for v in vectors]

    return spread


def ours_core_sequential(url: str) -> Run:
    from tir_transport import EmbeddingsClient

    client = EmbeddingsClient.from_env(
        api_key=KEY, base_url=url, model="e5", batch_size=BATCH, max_concurrency=1
    )
    return client.embed


def measure(run: Run, docs: list[str], clock: Callable[[], float]) -> float:
    # The last round's 10,000 vectors are garbage: collect them before the clock starts.
    gc.collect()
    started = clock()
    vectors = run(docs)
    elapsed = clock() - started
    assert len(vectors) == len(docs) and len(vectors[0]) == 384, "a contender lost vectors"
    return elapsed


def rounds(
    contenders: dict[str, Run], docs: list[str], n: int, clock: Callable[[], float]
) -> dict[str, float]:
    """Median per contender over `n` alternating rounds (after one warm-up each)."""
    for run in contenders.values():
        run(docs[:BATCH])
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(n):
        for name, run in contenders.items():
            times[name].append(measure(run, docs, clock))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="one short round: checks it runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    count, n = (640, 1) if args.smoke else (10_000, 5)
    docs = texts(count)
    report: dict[str, Any] = {"texts": count, "batch": BATCH, "wall_seconds": {}, "cpu": {}}
    with serving("--delay-ms", "20") as url:
        for framework, ours, peer in (
            ("langchain", ours_langchain, peer_langchain),
            ("llama_index", ours_llama_index, peer_llama_index),
        ):
            for kind in ("sync", "async"):
                is_async = kind == "async"
                medians = rounds(
                    {"ours": ours(url, is_async), "peer": peer(url, is_async)},
                    docs,
                    n,
                    time.perf_counter,
                )
                report["wall_seconds"][f"{framework} {kind}"] = medians
    with serving() as url:
        cpu = rounds(
            {
                "floor": floor(url),
                "floor, 8 threads": floor(url, threads=8),
                "core ours, 1 in flight": ours_core_sequential(url),
                "langchain ours (8 in flight)": ours_langchain(url, False),
                "llama_index ours (8 in flight)": ours_llama_index(url, False),
            },
            docs,
            n,
            time.process_time,
        )
        report["cpu"] = {name: seconds / count * 1e6 for name, seconds in cpu.items()}
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def print_report(report: dict[str, Any]) -> None:
    print(f"{report['texts']} texts, batches of {report['batch']}, server latency 20 ms")
    print(f"{'case':24} {'ours':>9} {'peer':>9} {'ours/peer':>10}")
    for case, t in report["wall_seconds"].items():
        print(f"{case:24} {t['ours']:8.2f}s {t['peer']:8.2f}s {t['ours'] / t['peer']:10.2f}")
    cpu = report["cpu"]
    print("client CPU per vector, no latency (ratios: to the floor of the same concurrency)")
    for name, us in cpu.items():
        base = (
            cpu["floor"] if ("1 in flight" in name or name == "floor") else cpu["floor, 8 threads"]
        )
        print(
            f"  {name:32} {us:7.1f} us  /floor {us / base:5.2f}  /sequential floor "
            f"{us / cpu['floor']:5.2f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
