"""`make bench`: our chat adapters against the summed floor, a minimal adapter and the peers.

The method of issue 31. Every case runs its contenders in interleaved rounds (30 in the full
run): each round runs every contender once, in an order rotated from one round to the next
(round k starts at contender k mod n), and records per op both the client CPU
(`time.process_time`: this process, every thread) and the wall time (`time.perf_counter`). The
table reports, for each, the median over the rounds and the interquartile range (25th to 75th
percentile). The loopback server (`benchmarks/server.py`) runs in its own process: its CPU is
not the client's.

The contenders, in each framework (LangChain, LlamaIndex):

- ours: `ChatTIRLlama` / `TIRLlamaLLM`;
- peer: `ChatOpenAI(stream_usage=True)` / `OpenAILike(is_chat_model=True)`;
- minimal: the least any adapter over httpx can do: the framework's own chat model class
  (`BaseChatModel` / `LLM`) whose methods send raw httpx's request below and build the
  framework's reply objects with the content only;
- raw: raw httpx alone: a POST and `json.loads`, or reading the stream's lines and `json.loads`
  of each;
- no-io: the framework's own chat model class returning the same reply (or yielding as many
  chunks) without any I/O: the framework's own cost.

The summed floor is raw + no-io (their medians added): what the bytes and the framework cost
with nothing in between. The cases: invoke (`invoke` / `chat`), a stream of 500 chunks, and
async chat (`ainvoke` / `achat`, 160 requests a round) with at most 1, 8 and 32 requests in
flight (the peer, the minimal adapter and the floor at 32). `--busy N` measures with N
busy-loop processes beside (under load).

    python benchmarks/bench.py            # the full run (about 5 minutes)
    python benchmarks/bench.py --smoke    # two short rounds of everything: checks it runs
    python benchmarks/bench.py --busy 2   # the full run beside two busy processes
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
from server import serving

ROOT = Path(__file__).resolve().parent.parent
CHUNKS = 500  # content chunks of a streamed reply
REQUESTS = 160  # async requests a round, per contender
IN_FLIGHT = (1, 8, 32)  # async requests in flight at most (the last: peer, minimal, floor too)
KEY = "bench-key"
# The async clients of raw httpx and of the minimal adapter keep a connection for every request
# in flight (httpx keeps 20 by default: at 32 in flight it would reconnect every round).
ASYNC_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)

# (client CPU seconds, wall seconds) per op, over one round's batch of ops.
Sample = tuple[float, float]
Batch = Callable[[], Sample]


# -- raw httpx: the floor's I/O half, and what the minimal adapter sends ----------------------


def chat_body() -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def stream_body() -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": CHUNKS,
        "stream_options": {"include_usage": True},
    }


def raw_invoke(client: httpx.Client, url: str) -> None:
    json.loads(client.post(f"{url}/chat/completions", json=chat_body()).content)


async def raw_ainvoke(client: httpx.AsyncClient, url: str) -> None:
    json.loads((await client.post(f"{url}/chat/completions", json=chat_body())).content)


def raw_stream(client: httpx.Client, url: str) -> None:
    with client.stream("POST", f"{url}/chat/completions", json=stream_body()) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                json.loads(line[6:])


# -- the framework's own cost: a chat model that does no I/O --------------------------------


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

        async def _agenerate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            # Without it, BaseChatModel runs `_generate` in a thread: that would be no floor.
            return self._generate(messages, stop, None, **kw)

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

        def _reply(self) -> ChatResponse:
            return ChatResponse(
                message=ChatMessage(role="assistant", content="Hello. How can I assist you today?"),
                additional_kwargs={"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
            )

        @llm_chat_callback()
        def chat(self, messages: Any, **kw: Any) -> ChatResponse:
            return self._reply()

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
            # Not `self.chat`: its callback wrapper would run a second time.
            return self._reply()

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


# -- the minimal adapter: raw httpx inside the framework's own chat model class --------------


def langchain_minimal(url: str, client: httpx.Client, aclient: httpx.AsyncClient) -> Any:
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

    def result(content: bytes) -> ChatResult:
        reply = json.loads(content)
        message = AIMessage(content=reply["choices"][0]["message"]["content"])
        return ChatResult(generations=[ChatGeneration(message=message)])

    class MinimalChat(BaseChatModel):
        """The least an adapter over httpx can do: raw httpx's request, the reply's content.

        (The request is raw httpx's fixed body: no conversion of the messages.)
        """

        @property
        def _llm_type(self) -> str:
            return "minimal"

        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            return result(client.post(f"{url}/chat/completions", json=chat_body()).content)

        async def _agenerate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            response = await aclient.post(f"{url}/chat/completions", json=chat_body())
            return result(response.content)

        def _stream(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Iterator[ChatGenerationChunk]:
            with client.stream("POST", f"{url}/chat/completions", json=stream_body()) as response:
                for line in response.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        choices = json.loads(line[6:])["choices"]
                        if choices:
                            content = choices[0]["delta"].get("content") or ""
                            chunk = ChatGenerationChunk(message=AIMessageChunk(content=content))
                            if run_manager:
                                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                            yield chunk

    return MinimalChat()


def llama_index_minimal(url: str, client: httpx.Client, aclient: httpx.AsyncClient) -> Any:
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse, LLMMetadata
    from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
    from llama_index.core.llms.llm import LLM

    def response(content: bytes) -> ChatResponse:
        reply = json.loads(content)
        text = reply["choices"][0]["message"]["content"]
        return ChatResponse(message=ChatMessage(role="assistant", content=text))

    def gen() -> Iterator[ChatResponse]:
        text = ""
        with client.stream("POST", f"{url}/chat/completions", json=stream_body()) as reply:
            for line in reply.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    choices = json.loads(line[6:])["choices"]
                    if choices:
                        delta = choices[0]["delta"].get("content") or ""
                        text += delta
                        yield ChatResponse(
                            message=ChatMessage(role="assistant", content=text), delta=delta
                        )

    class MinimalLLM(LLM):
        """The least an adapter over httpx can do: raw httpx's request, the reply's content.

        (The request is raw httpx's fixed body: no conversion of the messages.)
        """

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(is_chat_model=True)

        @llm_chat_callback()
        def chat(self, messages: Any, **kw: Any) -> ChatResponse:
            return response(client.post(f"{url}/chat/completions", json=chat_body()).content)

        @llm_chat_callback()
        def stream_chat(self, messages: Any, **kw: Any) -> Any:
            return gen()

        @llm_chat_callback()
        async def achat(self, messages: Any, **kw: Any) -> ChatResponse:
            reply = await aclient.post(f"{url}/chat/completions", json=chat_body())
            return response(reply.content)

        @llm_chat_callback()
        async def astream_chat(self, messages: Any, **kw: Any) -> Any:
            raise NotImplementedError

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            raise NotImplementedError

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            raise NotImplementedError

        @llm_completion_callback()
        async def acomplete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            raise NotImplementedError

        @llm_completion_callback()
        async def astream_complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
            raise NotImplementedError

    return MinimalLLM()


# -- ours and the peers ----------------------------------------------------------------------


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


# -- measuring -------------------------------------------------------------------------------


def drain(iterable: Iterable[object]) -> None:
    """Consume a stream as a real consumer does: each chunk is dropped once handled.

    (Keeping every chunk in a list would make the garbage collector's cost, which grows with
    the objects kept, part of what is measured.)
    """
    deque(iterable, maxlen=0)


def sync_batch(op: Callable[[], object], repeat: int) -> Batch:
    """`repeat` calls of `op`: client CPU and wall seconds per call."""

    def batch() -> Sample:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(repeat):
            op()
        return (time.process_time() - cpu) / repeat, (time.perf_counter() - wall) / repeat

    return batch


def async_batch(
    loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[object]], in_flight: int
) -> Batch:
    """`REQUESTS` awaits of `call()`, at most `in_flight` at once: CPU and wall per request.

    `in_flight` workers share the requests (each starts the next as its last one ends): at
    most that many in flight, and no task or lock per request in what is measured.
    """

    async def run() -> Sample:
        left = REQUESTS

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await call()

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return (time.process_time() - cpu) / REQUESTS, (time.perf_counter() - wall) / REQUESTS

    return lambda: loop.run_until_complete(run())


def spread(values: list[float]) -> dict[str, Any]:
    """Median and interquartile range (25th and 75th percentiles) of one contender's rounds."""
    if len(values) < 2:
        quartiles = [values[0]] * 3
    else:
        quartiles = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "iqr": [quartiles[0], quartiles[2]]}


def measure(batches: dict[str, Batch], rounds: int) -> dict[str, dict[str, Any]]:
    """Each contender's CPU and wall per op: median and IQR over `rounds` interleaved rounds.

    Every round runs each contender's batch once, in the same cyclic order; round k starts at
    contender k mod n, so no contender always runs first (right after the warm-up or the
    previous case).
    """
    names = list(batches)
    for batch in batches.values():
        batch()  # warm up: connections, imports, caches
    cpu: dict[str, list[float]] = {name: [] for name in names}
    wall: dict[str, list[float]] = {name: [] for name in names}
    for number in range(rounds):
        first = number % len(names)
        for name in names[first:] + names[:first]:
            gc.collect()
            sample = batches[name]()
            cpu[name].append(sample[0])
            wall[name].append(sample[1])
    return {name: {"cpu": spread(cpu[name]), "wall": spread(wall[name])} for name in names}


def with_floor_and_ratios(times: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Add the summed floor (raw + no-io) and the ratios of the medians, CPU and wall.

    The floor's median is the two medians added; its IQR, the two 25th percentiles added and the
    two 75th percentiles added.
    """
    case: dict[str, Any] = dict(times)
    case["floor"] = {
        kind: {
            "median": times["raw"][kind]["median"] + times["no-io"][kind]["median"],
            "iqr": [
                a + b
                for a, b in zip(times["raw"][kind]["iqr"], times["no-io"][kind]["iqr"], strict=True)
            ],
        }
        for kind in ("cpu", "wall")
    }

    def ratio(a: str, b: str) -> dict[str, float]:
        return {k: case[a][k]["median"] / case[b][k]["median"] for k in ("cpu", "wall")}

    case["ratios"] = {
        "ours/floor": ratio("ours", "floor"),
        "ours/minimal": ratio("ours", "minimal"),
        "minimal/floor": ratio("minimal", "floor"),
        "ours/peer": ratio("ours", "peer"),
    }
    return case


def framework_cases(
    url: str, framework: str, repeats: tuple[int, int], rounds: int
) -> dict[str, dict[str, Any]]:
    """Invoke, stream and async chat of one framework: {case: its times and ratios}."""
    from llama_index.core.base.llms.types import ChatMessage

    raw, raw_async = httpx.Client(), httpx.AsyncClient(limits=ASYNC_LIMITS)
    own, own_async = httpx.Client(), httpx.AsyncClient(limits=ASYNC_LIMITS)  # the minimal's
    messages = [ChatMessage(role="user", content="hi")]
    # How a user calls each framework: (invoke, stream, async invoke), each given the model.
    invoke: Callable[[Any], object]
    stream: Callable[[Any], object]
    ainvoke: Callable[[Any], Awaitable[object]]
    if framework == "langchain":
        models = {**langchain_models(url), "minimal": langchain_minimal(url, own, own_async)}
        fake = langchain_fake()
        invoke, stream = (lambda m: m.invoke("hi")), (lambda m: drain(m.stream("hi")))
        ainvoke = lambda m: m.ainvoke("hi")  # noqa: E731
    else:
        models = {**llama_index_models(url), "minimal": llama_index_minimal(url, own, own_async)}
        fake = llama_index_fake()
        invoke, stream = (lambda m: m.chat(messages)), (lambda m: drain(m.stream_chat(messages)))
        ainvoke = lambda m: m.achat(messages)  # noqa: E731
    invoke_repeat, stream_repeat = repeats
    cases: dict[str, dict[str, Any]] = {}
    batches = {name: sync_batch(partial(invoke, m), invoke_repeat) for name, m in models.items()}
    batches["raw"] = sync_batch(lambda: raw_invoke(raw, url), invoke_repeat)
    batches["no-io"] = sync_batch(partial(invoke, fake), invoke_repeat)
    cases["invoke"] = {"per": "call", "ops_a_round": invoke_repeat}
    cases["invoke"] |= with_floor_and_ratios(measure(batches, rounds))

    batches = {name: sync_batch(partial(stream, m), stream_repeat) for name, m in models.items()}
    batches["raw"] = sync_batch(lambda: raw_stream(raw, url), stream_repeat)
    batches["no-io"] = sync_batch(partial(stream, fake), stream_repeat)
    name = f"stream {CHUNKS} chunks"
    cases[name] = {"per": "stream", "ops_a_round": stream_repeat}
    cases[name] |= with_floor_and_ratios(measure(batches, rounds))

    # One event loop for the whole async case: every client's pool stays on it, warm.
    loop = asyncio.new_event_loop()
    try:
        most = IN_FLIGHT[-1]
        batches = {
            f"ours x{n}": async_batch(loop, partial(ainvoke, models["ours"]), n)
            for n in IN_FLIGHT[:-1]
        }
        batches |= {
            name: async_batch(loop, partial(ainvoke, m), most) for name, m in models.items()
        }
        batches["raw"] = async_batch(loop, lambda: raw_ainvoke(raw_async, url), most)
        batches["no-io"] = async_batch(loop, partial(ainvoke, fake), most)
        name = f"async invoke, {most} in flight"
        cases[name] = {"per": "request", "ops_a_round": REQUESTS}
        cases[name] |= with_floor_and_ratios(measure(batches, rounds))
        loop.run_until_complete(raw_async.aclose())
        loop.run_until_complete(own_async.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    raw.close()
    own.close()
    return cases


@contextmanager
def busy(processes: int) -> Iterator[None]:
    """`processes` busy loops (pure Python) beside the benchmark while it runs: under load.

    Killed on the way out, error or Ctrl-C included; each also ends by itself once this process
    is gone (it checks its parent every few milliseconds).
    """
    loop = (
        "import os\nparent = os.getppid()\n"
        "while os.getppid() == parent:\n    for _ in range(100_000):\n        pass\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(processes):
            procs.append(subprocess.Popen([sys.executable, "-c", loop]))
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


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


# -- the report ------------------------------------------------------------------------------

FRAMEWORKS = ("langchain", "llama_index")
PEERS = {"langchain": "ChatOpenAI", "llama_index": "OpenAILike"}


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = f" ({line.split(':', 1)[1].strip()})"
                break
    except OSError:
        pass
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs{model}, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )


def commit() -> str | None:
    """The commit measured (`git rev-parse --short HEAD`), marked when the tree has changes."""

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", *arguments], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head} (with uncommitted changes)" if changed else head


def goals(cases: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 31's goals, each with the value measured and whether it is met (client CPU)."""
    found: list[dict[str, Any]] = []

    def goal(text: str, value: Any, met: bool) -> None:
        found.append({"goal": text, "value": value, "met": met})

    most = IN_FLIGHT[-1]
    for fw in FRAMEWORKS:
        ratio = cases[f"{fw}: invoke"]["ratios"]["ours/floor"]["cpu"]
        goal(f"{fw}: invoke, ours/floor CPU <= 1.05", round(ratio, 3), ratio <= 1.05)
        ratio = cases[f"{fw}: stream {CHUNKS} chunks"]["ratios"]["ours/floor"]["cpu"]
        goal(f"{fw}: stream, ours/floor CPU <= 1.00", round(ratio, 3), ratio <= 1.0)
        case = cases[f"{fw}: async invoke, {most} in flight"]
        ms = case["ours"]["cpu"]["median"] * 1e3
        goal(
            f"{fw}: async, {most} in flight, ours' CPU ms per request <= 0.5",
            round(ms, 3),
            ms <= 0.5,
        )
        per_level = [case[f"ours x{n}"] for n in IN_FLIGHT[:-1]] + [case["ours"]]
        levels = ", ".join(str(n) for n in IN_FLIGHT)
        for kind in ("cpu", "wall"):
            values = [level[kind]["median"] * 1e3 for level in per_level]
            goal(
                f"{fw}: async, ours' {kind} ms per request at {levels} in flight never higher "
                "with more in flight",
                [round(v, 3) for v in values],
                all(later <= earlier for earlier, later in pairwise(values)),
            )
    worst = max(cases, key=lambda name: cases[name]["ratios"]["ours/peer"]["cpu"])
    ratio = cases[worst]["ratios"]["ours/peer"]["cpu"]
    goal(f"every case: ours/peer CPU <= 0.5 (highest: {worst})", round(ratio, 3), ratio <= 0.5)
    return found


def print_report(report: dict[str, Any]) -> None:
    print("tir-llama chat benchmark (benchmarks/bench.py, the method of issue 31)")
    print(f"machine: {report['machine']}")
    print(f"commit:  {report['commit'] or 'unknown (not a git checkout)'}")
    print(f"date:    {report['date']}")
    print(f"command: {report['command']}")
    load = " ".join(f"{a:.2f}" for a in report["load_average"])
    beside = f"{report['busy']} busy-loop processes beside" if report["busy"] else "none added"
    print(f"load:    {beside} (--busy {report['busy']}); load average {load} at the start")
    print(
        f"method:  {report['rounds']} interleaved rounds, the order rotated every round; per op, "
        "client CPU (time.process_time)\n"
        "         and wall time (time.perf_counter), in ms: median [25th-75th percentile]"
    )
    if report["smoke"]:
        print("SMOKE RUN: too few rounds and too small sizes to judge anything; checks it runs")
    most = IN_FLIGHT[-1]
    names = {
        "minimal": "minimal adapter",
        "raw": "raw httpx",
        "no-io": "no-io model",
        "floor": "summed floor",
    }
    order = [*(f"ours x{n}" for n in IN_FLIGHT[:-1]), "ours", "minimal", "peer", "raw", "no-io"]
    for case, times in report["cases"].items():
        framework = case.split(":")[0]
        print()
        note = f"; {most} in flight unless marked" if times["per"] == "request" else ""
        print(f"{case}: ms per {times['per']}, {times['ops_a_round']} a round{note}")
        print(f"  {'':28} {'CPU median [IQR]':>24} {'wall median [IQR]':>24}")
        for name in [*order, "floor"]:
            if name not in times:
                continue
            if name.startswith("ours x"):
                label = f"ours, {name[6:]} in flight"
            elif name == "ours" and times["per"] == "request":
                label = f"ours, {most} in flight"
            elif name == "peer":
                label = f"peer ({PEERS[framework]})"
            else:
                label = names.get(name, name)
            cells = []
            for kind in ("cpu", "wall"):
                low, high = (q * 1e3 for q in times[name][kind]["iqr"])
                cells.append(f"{times[name][kind]['median'] * 1e3:.3f} [{low:.3f}-{high:.3f}]")
            print(f"  {label:28} {cells[0]:>24} {cells[1]:>24}")
    print()
    ratios = ("ours/floor", "ours/minimal", "minimal/floor", "ours/peer")
    print("ratios of the medians (floor: the summed floor, raw httpx + the no-io model)")
    print(f"{'':40}" + "".join(f"{r:>14}" for r in ratios))
    print(f"{'case':40}" + f"{'CPU':>8}{'wall':>6}" * len(ratios))
    for case, times in report["cases"].items():
        row = "".join(
            f"{times['ratios'][r]['cpu']:8.2f}{times['ratios'][r]['wall']:6.2f}" for r in ratios
        )
        print(f"{case:40}{row}")
    print()
    print("goals of issue 31 (medians, client CPU unless said):")
    for goal in report["goals"]:
        value = goal["value"]
        shown = ", ".join(f"{v:.3f}" for v in value) if isinstance(value, list) else f"{value:.3f}"
        print(f"  {'met    ' if goal['met'] else 'NOT MET'}  {goal['goal']}: {shown}")
    print()
    for name, seconds in report["import_seconds"].items():
        print(f"import {name:55} {seconds:6.3f}s")
    for chunks, peaks in report["memory_mib"].items():
        shown = ", ".join(f"{name} {mib:.2f} MiB" for name, mib in peaks.items())
        print(f"peak traced memory streaming {chunks:>7} chunks: {shown}")
    print(f"took {report['seconds']:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="two short rounds: checks it runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--busy", type=int, default=0, metavar="N", help="measure beside N busy-loop processes"
    )
    args = parser.parse_args()
    global CHUNKS, REQUESTS
    if args.smoke:
        # Small enough for `make test`: this checks that every case runs, not how fast.
        CHUNKS, REQUESTS = 50, 32
    # (rounds, (invokes, streams) a round, import runs); the full run takes about 5 minutes.
    rounds, repeats, import_runs = (2, (10, 2), 1) if args.smoke else (30, (100, 5), 7)
    memory_chunks = (500, 2_000) if args.smoke else (10_000, 100_000)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": machine(),
        "commit": commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", *sys.argv]),
        "busy": args.busy,
        "load_average": list(os.getloadavg()),
        "smoke": args.smoke,
        "rounds": rounds,
        "cases": {},
    }
    with busy(args.busy), serving() as url:
        for framework in FRAMEWORKS:
            print(f"measuring {framework} ...", file=sys.stderr, flush=True)
            for case, times in framework_cases(url, framework, repeats, rounds).items():
                report["cases"][f"{framework}: {case}"] = times
        print("measuring memory and import times ...", file=sys.stderr, flush=True)
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
    report["goals"] = goals(report["cases"])
    report["seconds"] = time.perf_counter() - started
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
