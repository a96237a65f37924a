"""`make bench`: our adapters against the floor and the peers, in alternating rounds.

The floor of each case is raw httpx (a POST and `json.loads`; or reading the stream's lines and
`json.loads` of each) plus the framework's own cost for a chat model that does no I/O and
returns the same reply (or yields the same number of chunks). Contenders run in alternating
rounds against one loopback server in its own process; the table reports medians and ratios.

    python benchmarks/bench.py            # the full run (a few minutes)
    python benchmarks/bench.py --smoke    # one short round of everything: checks it runs
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
from server import serving

CHUNKS = 500
CONCURRENT = 200
KEY = "bench-key"


# -- the floor: raw httpx plus a chat model that does no I/O ----------------------------------


def raw_invoke(client: httpx.Client, url: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    json.loads(client.post(f"{url}/chat/completions", json=body).content)


def raw_stream(client: httpx.Client, url: str) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": CHUNKS,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                json.loads(line[6:])


async def raw_astream(client: httpx.AsyncClient, url: str) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": CHUNKS,
        "stream_options": {"include_usage": True},
    }
    async with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                json.loads(line[6:])


def langchain_fake() -> Any:
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

    class NoIOChat(BaseChatModel):
        """Returns the benchmark reply without I/O: the framework's own cost."""

        @property
        def _llm_type(self) -> str:
            return "no-io"

        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            message = AIMessage(
                content="Hello. How can I assist you today?",
                usage_metadata={"input_tokens": 12, "output_tokens": 9, "total_tokens": 21},
                response_metadata={"model_name": "m", "finish_reason": "stop"},
            )
            return ChatResult(generations=[ChatGeneration(message=message)])

        def _stream(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Iterator[ChatGenerationChunk]:
            for i in range(kw.get("max_tokens", CHUNKS)):
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=f" tok{i}"))
                if run_manager:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    usage_metadata={
                        "input_tokens": 12,
                        "output_tokens": CHUNKS,
                        "total_tokens": 512,
                    },
                    chunk_position="last",
                )
            )

        async def _astream(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> AsyncIterator[ChatGenerationChunk]:
            for chunk in self._stream(messages, stop, None, **kw):
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    return NoIOChat()


def llama_index_fake() -> Any:
    from llama_index.core.base.llms.types import (
        ChatMessage,
        ChatResponse,
        CompletionResponse,
        LLMMetadata,
    )
    from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
    from llama_index.core.llms.llm import LLM

    class NoIOLLM(LLM):
        """Returns the benchmark reply without I/O: the framework's own cost."""

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(is_chat_model=True)

        @llm_chat_callback()
        def chat(self, messages: Any, **kw: Any) -> ChatResponse:
            return ChatResponse(
                message=ChatMessage(role="assistant", content="Hello. How can I assist you today?"),
                additional_kwargs={"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
            )

        def _gen(self) -> Iterator[ChatResponse]:
            text = ""
            for i in range(CHUNKS):
                delta = f" tok{i}"
                text += delta
                yield ChatResponse(message=ChatMessage(role="assistant", content=text), delta=delta)

        @llm_chat_callback()
        def stream_chat(self, messages: Any, **kw: Any) -> Any:
            return self._gen()

        @llm_chat_callback()
        async def astream_chat(self, messages: Any, **kw: Any) -> Any:
            async def gen() -> Any:
                for response in self._gen():
                    yield response

            return gen()

        @llm_chat_callback()
        async def achat(self, messages: Any, **kw: Any) -> ChatResponse:
            response: ChatResponse = self.chat(messages)
            return response

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
            return CompletionResponse(text="Hello.")

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            raise NotImplementedError

        @llm_completion_callback()
        async def acomplete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            raise NotImplementedError

        @llm_completion_callback()
        async def astream_complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            raise NotImplementedError

    return NoIOLLM()


# -- contenders ----------------------------------------------------------------------------------


def langchain_models(url: str) -> dict[str, Any]:
    from langchain_openai import ChatOpenAI

    from langchain_tir import ChatTIRLlama

    return {
        "ours": ChatTIRLlama(api_key=KEY, base_url=url, max_tokens=CHUNKS),
        "peer": ChatOpenAI(
            base_url=url, api_key=KEY, model="m", stream_usage=True, max_tokens=CHUNKS
        ),
    }


def llama_index_models(url: str) -> dict[str, Any]:
    from llama_index.llms.openai_like import OpenAILike  # type: ignore[import-untyped]

    from llama_index_tir import TIRLlamaLLM

    return {
        "ours": TIRLlamaLLM(api_key=KEY, base_url=url, max_tokens=CHUNKS),
        "peer": OpenAILike(
            model="m", api_base=url, api_key=KEY, is_chat_model=True, max_tokens=CHUNKS
        ),
    }


def drain(iterable: Iterable[object]) -> None:
    """Consume a stream as a real consumer does: each chunk is dropped once handled.

    (Keeping every chunk in a list would make the garbage collector's cost, which grows with
    the objects kept, part of what is measured.)
    """
    deque(iterable, maxlen=0)


def measure(ops: dict[str, Callable[[], object]], repeat: int, rounds: int) -> dict[str, float]:
    """Median seconds per op for each contender, alternating contenders every round."""
    samples: dict[str, list[float]] = {name: [] for name in ops}
    for op in ops.values():
        op()  # warm up: connections, imports, caches
    for _ in range(rounds):
        for name, op in ops.items():
            gc.collect()
            start = time.perf_counter()
            for _ in range(repeat):
                op()
            samples[name].append((time.perf_counter() - start) / repeat)
    return {name: statistics.median(values) for name, values in samples.items()}


def framework_cases(
    url: str, framework: str, repeat: int, rounds: int
) -> dict[str, dict[str, float]]:
    from llama_index.core.base.llms.types import ChatMessage

    raw_sync = httpx.Client()
    messages = [ChatMessage(role="user", content="hi")]
    if framework == "langchain":
        models, fake = langchain_models(url), langchain_fake()
        invoke = {name: (lambda m=m: m.invoke("hi")) for name, m in models.items()}
        stream = {name: (lambda m=m: drain(m.stream("hi"))) for name, m in models.items()}
        fake_invoke = lambda: fake.invoke("hi")  # noqa: E731
        fake_stream = lambda: drain(fake.stream("hi"))  # noqa: E731
    else:
        models, fake = llama_index_models(url), llama_index_fake()
        invoke = {name: (lambda m=m: m.chat(messages)) for name, m in models.items()}
        stream = {name: (lambda m=m: drain(m.stream_chat(messages))) for name, m in models.items()}
        fake_invoke = lambda: fake.chat(messages)  # noqa: E731
        fake_stream = lambda: drain(fake.stream_chat(messages))  # noqa: E731
    results: dict[str, dict[str, float]] = {}
    t = measure(
        {**invoke, "raw": lambda: raw_invoke(raw_sync, url), "no-io": fake_invoke}, repeat, rounds
    )
    t["floor"] = t.pop("raw") + t.pop("no-io")
    results["invoke"] = t
    t = measure(
        {**stream, "raw": lambda: raw_stream(raw_sync, url), "no-io": fake_stream},
        max(1, repeat // 20),
        rounds,
    )
    t["floor"] = t.pop("raw") + t.pop("no-io")
    results[f"stream {CHUNKS} chunks"] = t
    results[f"{CONCURRENT} concurrent astreams"] = concurrent_case(
        url, framework, models, fake, rounds
    )
    raw_sync.close()
    return results


def concurrent_case(
    url: str, framework: str, models: dict[str, Any], fake: Any, rounds: int
) -> dict[str, float]:
    from llama_index.core.base.llms.types import ChatMessage

    messages = [ChatMessage(role="user", content="hi")]

    async def one(model: Any) -> None:
        if framework == "langchain":
            async for _ in model.astream("hi"):
                pass
        else:
            async for _ in await model.astream_chat(messages):
                pass

    async def many(model: Any) -> None:
        await asyncio.gather(*(one(model) for _ in range(CONCURRENT)))

    async def raw_many() -> None:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=CONCURRENT)
        async with httpx.AsyncClient(limits=limits) as client:
            await asyncio.gather(*(raw_astream(client, url) for _ in range(CONCURRENT)))

    def run_in_loop(factory: Callable[[], Any]) -> Callable[[], object]:
        return lambda: asyncio.run(factory())

    ops: dict[str, Callable[[], object]] = {}
    for name, model in models.items():
        ops[name] = run_in_loop(functools.partial(many, model))
    ops["raw"] = run_in_loop(raw_many)
    ops["no-io"] = run_in_loop(lambda: many(fake))
    t = measure(ops, 1, rounds)
    t["floor"] = t.pop("raw") + t.pop("no-io")
    return t


# -- imports and memory -----------------------------------------------------------------------


def import_time(module: str, base: str, runs: int) -> float:
    """Median extra seconds that importing `module` adds to importing `base`, fresh process."""

    def once(code: str) -> float:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import time; t=time.perf_counter(); {code}; print(time.perf_counter()-t)",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return float(out.stdout)

    # Timed from after `base` finished importing, in the same fresh process.
    return statistics.median(
        once(f"import {base}; t=time.perf_counter(); import {module}") for _ in range(runs)
    )


def stream_memory(url: str, chunks: int) -> dict[str, float]:
    """Peak traced MiB while streaming `chunks` chunks, each dropped as it arrives.

    LangChain's `BaseChatModel.stream` itself keeps every chunk (to report the whole message to
    callbacks), so the no-I/O model yielding the same chunks is measured too: the difference is
    ours.
    """
    from llama_index.core.base.llms.types import ChatMessage

    from langchain_tir import ChatTIRLlama
    from llama_index_tir import TIRLlamaLLM

    fake = langchain_fake()
    messages = [ChatMessage(role="user", content="hi")]
    runs: dict[str, Callable[[], object]] = {
        "langchain ours": lambda: [
            None for _ in ChatTIRLlama(api_key=KEY, base_url=url, max_tokens=chunks).stream("hi")
        ],
        "langchain no-io": lambda: [None for _ in fake.stream("hi", max_tokens=chunks)],
        "llama_index ours": lambda: [
            None
            for _ in TIRLlamaLLM(api_key=KEY, base_url=url, max_tokens=chunks).stream_chat(messages)
        ],
    }
    peaks = {}
    for name, run in runs.items():
        gc.collect()
        tracemalloc.start()
        run()
        peaks[name] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return peaks


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="one short round: checks it runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    global CHUNKS, CONCURRENT
    if args.smoke:
        # Small enough for `make test`: this checks that every case runs, not how fast.
        CHUNKS, CONCURRENT = 50, 10
    repeat, rounds, import_runs = (20, 1, 1) if args.smoke else (200, 7, 7)
    memory_chunks = (500, 2_000) if args.smoke else (10_000, 100_000)
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "cases": {},
    }
    with serving() as url:
        for framework in ("langchain", "llama_index"):
            for case, times in framework_cases(url, framework, repeat, rounds).items():
                report["cases"][f"{framework}: {case}"] = times
        report["memory_mib"] = {n: stream_memory(url, n) for n in memory_chunks}
    report["import_seconds"] = {
        "langchain_tir over langchain_core BaseChatModel": import_time(
            "langchain_tir", "langchain_core.language_models.chat_models", import_runs
        ),
        "langchain_openai over langchain_core BaseChatModel": import_time(
            "langchain_openai", "langchain_core.language_models.chat_models", import_runs
        ),
        "llama_index_tir over llama_index.core": import_time(
            "llama_index_tir", "llama_index.core", import_runs
        ),
        "llama_index.llms.openai_like over llama_index.core": import_time(
            "llama_index.llms.openai_like", "llama_index.core", import_runs
        ),
    }
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def print_report(report: dict[str, Any]) -> None:
    print(f"machine: {report['machine']}")
    print(
        f"{'case':50} {'ours':>10} {'peer':>10} {'floor':>10} {'ours/floor':>11} {'ours/peer':>10}"
    )
    for case, t in report["cases"].items():
        print(
            f"{case:50} {t['ours'] * 1e3:9.2f}ms {t['peer'] * 1e3:9.2f}ms "
            f"{t['floor'] * 1e3:9.2f}ms {t['ours'] / t['floor']:11.2f} "
            f"{t['ours'] / t['peer']:10.2f}"
        )
    for name, seconds in report["import_seconds"].items():
        print(f"import {name:55} {seconds:6.3f}s")
    for chunks, peaks in report["memory_mib"].items():
        shown = ", ".join(f"{name} {mib:.2f} MiB" for name, mib in peaks.items())
        print(f"peak traced memory streaming {chunks:>7} chunks: {shown}")


if __name__ == "__main__":
    raise SystemExit(main())
