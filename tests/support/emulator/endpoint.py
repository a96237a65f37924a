"""An emulator of a TIR GenAI endpoint (vLLM's wire format) on a loopback socket.

It speaks HTTP/1.1 itself over asyncio streams, in a background thread, so that tests (sync
or async, any event loop) talk to it through real sockets. One server answers every route a
chain uses, as vLLM does: chat (`/chat/completions`, streamed or not), embeddings
(`/embeddings`, bag-of-words vectors), rerank (`/rerank`, word-overlap scores, so that tests
know the order and can make ties on purpose) and `/models` (with vLLM's `max_model_len`).
Replies are scripted with `Reply` values (`RerankReply` for rerank's own faults) queued per
route; with none queued chat answers like the recorded TIR stream (`fixtures/seed_stream.txt`).
Fault knobs live on `Reply` (per request) and on the emulator (per endpoint behaviour: tool
parsing off, context windows, required key, delays), and `reset()` puts every one back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import json
import math
import struct
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

SEED_ID = "chat-b3b5ae1d266c428f894f05e33a39ea5b"
SEED_CREATED = 1738752367
SEED_PIECES = ["Hello", ".", " How", " can", " I", " assist", " you", " today", "?"]
DEFAULT_MODEL = "llama3_1_8b_instruct"
RERANK_MODEL = "bge_reranker_v2_m3"
# What vLLM 0.32 sends as `system_fingerprint` (Emulator.system_fingerprint; TIR's recorded
# stream has none).
VLLM_FINGERPRINT = "vllm-0.32.0-emulated"
# What `/models` reports as the served window (vLLM's `max_model_len`): Llama 3.1 8B's.
DEFAULT_MAX_MODEL_LEN = 131_072

# The longest a test waits for something the emulator reports, and the longest a held reply
# waits for its company: generous, so that a busy machine is slow, not wrong. Neither is a
# measurement; a test that reaches one has failed (or lost a held reply's company for good).
WAIT_SECONDS = 60.0
HOLD_SECONDS = 60.0

TOOLS_REJECTED = (
    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
)
# vLLM's request validation, whatever the tool parser: a caller's mistake, not the endpoint's.
TOOL_CHOICE_MISMATCH = (
    "1 validation error for ChatCompletionRequest\n  Value error, The tool specified in "
    "`tool_choice` does not match any of the specified `tools`"
)
# vLLM 0.32's checks of `tools` and `tool_choice` before the one above (protocol.py).
EMPTY_TOOLS = (
    "1 validation error for ChatCompletionRequest\n  Value error, `tools` must not be an empty "
    "array. Either provide at least one tool or omit the field entirely."
)
TOOL_CHOICE_WITHOUT_TOOLS = (
    "1 validation error for ChatCompletionRequest\n  Value error, When using `tool_choice`, "
    "`tools` must be set."
)
# Content part types vLLM's chat API reads; any other is refused ("Unknown part type").
KNOWN_PART_TYPES = frozenset(
    {"text", "image_url", "input_audio", "audio_url", "video_url", "file", "refusal"}
)


# The test generation (see `Emulator.reset`) of the request a connection's task is answering.
_GENERATION: contextvars.ContextVar[int] = contextvars.ContextVar("emulator_generation")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Reply:
    """One scripted reply; the defaults give the recorded TIR reply."""

    pieces: list[str] | None = None
    text: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    error_format: str = "nested"  # "flat" (older vLLM) or "nested" (newer vLLM)
    message: str = "emulated failure"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # usage.prompt_tokens_details (vLLM's prefix cache)
    id: str | None = None
    created: int | None = None
    model: str | None = None
    # Stream faults.
    cut_after: int | None = None  # close the connection after this many events
    error_event_after: int | None = None  # send an error event after this many events
    crlf: bool = False
    split: int | None = None  # write the body in pieces of this many bytes
    comments: bool = False  # an SSE comment before every event
    delay: float = 0.0  # seconds before each event
    stall_after: int | None = None  # stop sending (connection open) after N events
    stall_seconds: float = 30.0
    usage_null: bool = False  # older vLLM: "usage": null on every chunk
    no_usage: bool = False  # a server (or gateway) that reports no usage at all
    no_done: bool = False
    no_finish: bool = False
    raw_events: list[str] | None = None  # send exactly these `data:` payloads
    repeat_tool_names: bool = False  # name and id in every tool-call delta, as llama.cpp does
    # Embedding faults.
    short_by: int = 0  # leave this many vectors out of the reply
    drop_index: bool = False  # the first vector comes without its index
    # Concurrency: answer only once this many requests are being answered at once (or after
    # HOLD_SECONDS). Queued for the first N requests, it makes a peak of N certain when the
    # client allows N, without relying on how fast a busy machine sends them.
    hold_until_in_flight: int | None = None


@dataclass
class RerankReply(Reply):
    """A scripted rerank reply: `Reply`'s knobs plus the ways a rerank reply can fail to fit.

    `status`, `body`, `headers`, `delay`, `no_usage`, `model` and `hold_until_in_flight` mean
    what they mean for the other routes.
    """

    duplicate_index: bool = False  # the second result repeats the first one's index
    drop_result: bool = False  # one result fewer than asked for
    index_out_of_range: bool = False  # the last result names one past the last document
    bad_score: bool = False  # the first result's relevance_score becomes `score`
    score: Any = None  # (a str, null, NaN as a string ...)
    wrong_document: bool = False  # the first result quotes another document's text
    no_document: bool = False  # results without `document` (return_documents off)
    unsorted: bool = False  # results worst first (valid, but not in vLLM's order)
    ignore_top_n: bool = False  # every result, whatever top_n asked


@dataclass
class RecordedRequest:
    """What the emulator received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def _max_tokens(payload: dict[str, Any]) -> Any:
    # vLLM: `max_completion_tokens or max_tokens` (OpenAI's newer name first).
    return payload.get("max_completion_tokens") or payload.get("max_tokens")


def _error_body(fmt: str, message: str, status: int) -> dict[str, Any]:
    error_type = HTTPStatus(status).phrase.replace(" ", "") + "Error" if status else "Error"
    if fmt == "flat":
        return {
            "object": "error",
            "message": message,
            "type": error_type,
            "param": None,
            "code": status,
        }
    return {"error": {"message": message, "type": error_type, "param": None, "code": status}}


def instance_of(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """The plainest value valid for a JSON schema: what guided decoding guarantees, no more.

    vLLM holds a reply to the schema of `response_format` or of a forced tool; the emulator
    does the same with fixed values, so tests see the wire shape, never a model's judgement.
    """
    defs = {**(defs or {}), **schema.get("$defs", {}), **schema.get("definitions", {})}
    if "$ref" in schema:
        return instance_of(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key, []) if o.get("type") != "null"]
        if options:
            return instance_of(options[0], defs)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {name: instance_of(sub, defs) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return []
    if kind == "integer":
        return max(0, int(schema.get("minimum", 0)))
    if kind == "number":
        return float(max(0, schema.get("minimum", 0)))
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "emulated"


def _logprobs(payload: dict[str, Any], pieces: list[str]) -> dict[str, Any] | None:
    """vLLM's `logprobs` of a choice, when the request asks (`logprobs`, `top_logprobs`).

    Each piece is one token; its logprob is a fixed function of its position, and the
    alternatives are named `alt1`, `alt2`... so that a test knows every value.
    """
    if not payload.get("logprobs"):
        return None
    top = int(payload.get("top_logprobs") or 0)
    content = []
    for i, piece in enumerate(pieces):
        chosen = {"token": piece, "logprob": -0.125 * (i + 1), "bytes": list(piece.encode())}
        alternatives = [
            {"token": f"alt{k}", "logprob": -1.0 * k - 1, "bytes": list(f"alt{k}".encode())}
            for k in range(1, top)
        ]
        content.append({**chosen, "top_logprobs": [chosen, *alternatives][:top]})
    return {"content": content}


def _count_prompt_tokens(body: dict[str, Any]) -> int:
    # Deterministic stand-in for a tokenizer: words plus 4 per message (role, markers).
    total = 0
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        total += 4 + len(str(content or "").split())
    return total


EMBED_DIM = 32


def embed_tokens(text: str) -> int:
    """Tokens the emulator counts for a text to embed: words plus the two special tokens."""
    return len(text.split()) + 2


def embed_vector(text: str, dim: int = EMBED_DIM) -> list[float]:
    """A unit bag-of-words vector: texts that share words are near, as a real model's are."""
    vector = [0.0] * dim
    for word in text.lower().split():
        word = word.strip(".,;:!?\"'()")
        if word:
            vector[zlib.crc32(word.encode()) % dim] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    # float32 round trip, so that vectors sent as floats equal those sent as base64.
    return list(struct.unpack(f"<{dim}f", struct.pack(f"<{dim}f", *(v / norm for v in vector))))


def _words(text: str) -> set[str]:
    return {w.strip(".,;:!?\"'()").lower() for w in text.split()} - {""}


def rerank_score(query: str, document: str) -> float:
    """The share of the query's words that the document has: in [0, 1], ties easy to make."""
    wanted = _words(query)
    return round(len(wanted & _words(document)) / len(wanted), 6) if wanted else 0.0


def rerank_tokens(query: str, document: str) -> int:
    """Tokens the emulator counts for one rerank pair: words of both plus three special tokens."""
    return len(query.split()) + len(document.split()) + 3


class Emulator:
    """The endpoint; use as a context manager or call `start()` / `stop()`."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        self._embed_queue: deque[Reply] = deque()  # replies for /embeddings only
        self._rerank_queue: deque[Reply] = deque()  # replies for /rerank only
        self.reject_tools = False
        self.reject_response_format = False
        self.reject_guided_json = False
        self.reject_json_object = False
        self.max_context: int | None = None
        self.require_key: str | None = None
        self.model = DEFAULT_MODEL
        # The models this server serves (every POST naming another gets vLLM's 404); None:
        # any name is served.
        self.served_models: set[str] | None = None
        # The window `/models` reports (vLLM's `max_model_len`); None: an endpoint that
        # reports none. What `tir-llama doctor` compares the window in use with.
        self.max_model_len: int | None = DEFAULT_MAX_MODEL_LEN
        # The shape of the errors the endpoint itself sends (validation, unknown model, the
        # window): older vLLM's "flat" `{"object": "error", ...}`, or vLLM 0.32's "nested".
        self.error_format = "flat"
        # vLLM 0.32's `system_fingerprint`, on the usage chunk (on the last chunk without
        # include_usage) and on whole replies; None: none anywhere, as TIR's recorded stream.
        self.system_fingerprint: str | None = None
        # Embeddings: vector width, the model's context (tokens per text), base64 handling.
        self.embed_dim = EMBED_DIM
        self.embed_max_tokens: int | None = None
        self.embed_ignore_base64 = False
        self.embed_reject_base64 = False
        self.embed_delay = 0.0
        self.chat_delay = 0.0  # seconds before every chat reply that sets no delay of its own
        # Rerank: seconds before every reply that sets none; the model's context, per pair.
        self.rerank_delay = 0.0
        self.rerank_max_tokens: int | None = None
        # Every Nth POST fails, in turn: 429 (Retry-After 0), 503, a dropped connection.
        self.fault_every: int | None = None
        self.faults_sent = 0
        self._posts = 0
        # Requests being answered now, the most at once, and (start, end) of each: counted
        # per test. A request an earlier test left running (a stalled stream, a client that
        # gave up) belongs to an earlier generation and is not counted when it ends.
        self._generation = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.spans: list[tuple[float, float]] = []
        # (time, status) of every response head sent, in order; a dropped connection is 0.
        self.sent: list[tuple[float, int]] = []
        # Notified whenever a request arrives, a response goes out or one ends (`wait_until`).
        self._changed = threading.Condition()
        # Held replies: how many in flight each waits for, and its future (on the server's loop).
        self._holds: list[tuple[int, asyncio.Future[None]]] = []
        # A chat reply that names the tool result it was given, for samples whose outcome is
        # "the answer used the tool's result": the last message, when it is a tool result, is
        # quoted back (native `tool` role, or Llama's `ipython` role in prompt mode).
        self.answer_from_tool_results = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0  # connections accepted so far; the n-th is numbered n
        self._open_numbers: set[int] = set()
        self.port = 0

    # -- control ----------------------------------------------------------------------------

    def start(self) -> Emulator:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        self.requests.clear()
        self._queue.clear()
        self._embed_queue.clear()
        self._rerank_queue.clear()
        self.reject_tools = False
        self.reject_response_format = False
        self.reject_guided_json = False
        self.reject_json_object = False
        self.max_context = None
        self.require_key = None
        self.model = DEFAULT_MODEL
        self.served_models = None
        self.max_model_len = DEFAULT_MAX_MODEL_LEN
        self.error_format = "flat"
        self.system_fingerprint = None
        self.embed_dim = EMBED_DIM
        self.embed_max_tokens = None
        self.embed_ignore_base64 = False
        self.embed_reject_base64 = False
        self.embed_delay = 0.0
        self.chat_delay = 0.0
        self.rerank_delay = 0.0
        self.rerank_max_tokens = None
        self.fault_every = None
        self.faults_sent = 0
        self._posts = 0
        self._generation += 1
        self.in_flight = 0
        self.max_in_flight = 0
        self.spans = []
        self.sent = []
        self.answer_from_tool_results = False
        self._notify()
        if self._server is not None:  # held replies of the test that ended let go
            self._loop.call_soon_threadsafe(self._release_holds, True)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_until(
        self, predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS
    ) -> None:
        """Block until `predicate()` holds (checked on every request, response and end).

        The test's way to know that "the other request has happened" without sleeping. Fails
        with `what` when it does not hold within `timeout`.
        """
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise AssertionError(f"the emulator never saw {what} within {timeout} s")

    def starts(self, count: int) -> list[float]:
        """When each of `count` requests arrived, in order, once all of them have ended.

        A span is recorded as the emulator finishes a reply, which may be just after the client
        has read it: waiting here, not reading `spans` at once, counts the last one too.
        """
        self.wait_until(lambda: len(self.spans) >= count, f"{count} requests answered")
        return sorted(start for start, _ in self.spans)

    def statuses(self) -> list[int]:
        """The status of every response sent so far, in order (0: a dropped connection)."""
        return [status for _, status in self.sent]

    async def _hold(self, reply: Reply) -> None:
        if reply.hold_until_in_flight is None:
            return
        if self.in_flight >= reply.hold_until_in_flight:
            return
        waiter = self._loop.create_future()
        self._holds.append((reply.hold_until_in_flight, waiter))
        with contextlib.suppress(TimeoutError):  # then answer all the same: the peak tells
            await asyncio.wait_for(waiter, HOLD_SECONDS)

    def _release_holds(self, everyone: bool = False) -> None:
        for hold in list(self._holds):
            wanted, waiter = hold
            if everyone or self.in_flight >= wanted:
                self._holds.remove(hold)
                if not waiter.done():
                    waiter.set_result(None)

    def queue(self, *replies: Reply) -> None:
        """Script the next chat replies."""
        self._queue.extend(replies)

    def queue_embeddings(self, *replies: Reply) -> None:
        """Script the next embeddings replies (a RAG chain mixes both kinds of request)."""
        self._embed_queue.extend(replies)

    def queue_rerank(self, *replies: Reply) -> None:
        """Script the next rerank replies (`RerankReply`, or a plain `Reply` for an error)."""
        self._rerank_queue.extend(replies)

    def rerank_requests(self) -> list[RecordedRequest]:
        """The rerank requests received, in order (a RAG chain's chat and embeddings left out)."""
        return [r for r in self.requests if r.path.endswith("/rerank")]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    def open_since(self, mark: int) -> int:
        """How many connections accepted after `mark` (a value of `connections`) are open.

        A test's own connections, whatever earlier tests left open (a pooled client not yet
        collected, a stream still stalling).
        """
        return sum(1 for number in list(self._open_numbers) if number > mark)

    # -- HTTP -------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        number = self.connections
        self._open_numbers.add(number)
        try:
            while True:
                line = await reader.readline()
                if not line.strip():
                    break
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                parts = urlsplit(target)
                request = RecordedRequest(method, parts.path, parse_qs(parts.query), headers, body)
                self.requests.append(request)
                generation = self._generation
                _GENERATION.set(generation)  # this connection's task: read by `_sent`
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                started = time.monotonic()
                self._notify()
                self._release_holds()
                try:
                    keep_open = await self._respond(request, writer)
                finally:
                    if generation == self._generation:
                        self.in_flight -= 1
                        self.spans.append((started, time.monotonic()))
                    self._notify()
                if not keep_open:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)
            self._open_numbers.discard(number)
            self._notify()

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"content-type: {content_type}",
            f"content-length: {len(body)}",
            f"x-request-id: req-{uuid.uuid4().hex[:12]}",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        # Recorded before it is written: a client that has the response finds it in `sent`.
        self._sent(status)
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()

    def _sent(self, status: int) -> None:
        # A response to a request of an earlier test (a slow reply the client gave up on)
        # belongs to that test: it must not show in this one's statuses.
        if _GENERATION.get(self._generation) == self._generation:
            self.sent.append((time.monotonic(), status))
        self._notify()

    async def _respond(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        if request.path.endswith("/models"):
            model: dict[str, Any] = {"id": self.model, "object": "model"}
            if self.max_model_len is not None:
                model["max_model_len"] = self.max_model_len
            listing = {"object": "list", "data": [model]}
            await self._send(writer, 200, _dumps(listing).encode())
            return True
        is_embeddings = request.path.endswith("/embeddings")
        is_rerank = request.path.endswith("/rerank")
        if request.method != "POST" or not (
            request.path.endswith("/chat/completions") or is_embeddings or is_rerank
        ):
            await self._send(writer, 404, b'{"detail":"Not Found"}')
            return True
        if self.fault_every:
            self._posts += 1
            if self._posts % self.fault_every == 0:
                kind = self.faults_sent % 3
                self.faults_sent += 1
                if kind == 2:
                    writer.transport.abort()
                    self._sent(0)
                    return False
                status = 429 if kind == 0 else 503
                fault = _dumps(_error_body("nested", "injected fault", status)).encode()
                await self._send(writer, status, fault, headers={"retry-after": "0"})
                return True
        authorization = request.headers.get("authorization")
        if self.require_key is not None and authorization != f"Bearer {self.require_key}":
            body = _error_body("nested", "Invalid API key", 401)
            await self._send(writer, 401, _dumps(body).encode())
            return True
        unknown = self._unknown_model(request)
        if unknown is not None:
            body = _error_body(self.error_format, f"The model `{unknown}` does not exist.", 404)
            await self._send(writer, 404, _dumps(body).encode())
            return True
        if is_embeddings:
            return await self._embeddings(request, writer)
        if is_rerank:
            return await self._rerank(request, writer)
        try:
            payload = json.loads(request.body)
        except ValueError:
            await self._send(writer, 400, _dumps(_error_body("nested", "bad JSON", 400)).encode())
            return True
        # An endpoint-level rejection comes first, so a scripted reply waits for the retry.
        rejection = self._endpoint_rejection(payload)
        if rejection is not None:
            await self._send(writer, 400, _dumps(rejection).encode())
            return True
        reply = self._queue.popleft() if self._queue else self._default_reply(payload)
        await self._hold(reply)
        if reply.status >= 400 or reply.body is not None:
            body = reply.body
            if body is None:
                body = _error_body(reply.error_format, reply.message, reply.status)
            raw = (
                body
                if isinstance(body, bytes)
                else (body.encode() if isinstance(body, str) else _dumps(body).encode())
            )
            ctype = "application/json" if not isinstance(body, str | bytes) else "text/plain"
            await self._send(writer, reply.status, raw, ctype, reply.headers)
            return True
        if payload.get("stream"):
            return await self._stream(payload, reply, writer)
        if reply.stall_after is not None:
            # A non-streamed reply that never comes.
            await asyncio.sleep(reply.stall_seconds)
            writer.transport.abort()
            return False
        if reply.delay or self.chat_delay:
            await asyncio.sleep(reply.delay or self.chat_delay)
        await self._send(writer, 200, _dumps(self._completion(payload, reply)).encode())
        return True

    async def _embeddings(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        """vLLM's /v1/embeddings: bag-of-words vectors, so that similar texts are near."""
        try:
            payload = json.loads(request.body)
        except ValueError:
            await self._send(
                writer, 400, _dumps(_error_body(self.error_format, "bad JSON", 400)).encode()
            )
            return True
        texts = payload.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        b64 = payload.get("encoding_format") == "base64"
        if b64 and self.embed_reject_base64:
            message = (
                "1 validation error for EmbeddingRequest\nencoding_format\n  Input should be "
                "'float' [type=literal_error, input_value='base64']"
            )
            await self._send(
                writer, 400, _dumps(_error_body(self.error_format, message, 400)).encode()
            )
            return True
        truncate = payload.get("truncate_prompt_tokens")
        counts = [embed_tokens(t) for t in texts]
        if self.embed_max_tokens is not None and truncate is None:
            too_long = [c for c in counts if c > self.embed_max_tokens]
            if too_long:
                message = (
                    f"This model's maximum context length is {self.embed_max_tokens} tokens. "
                    f"However, you requested {too_long[0]} tokens in the input for embedding "
                    "generation. Please reduce the length of the input."
                )
                await self._send(
                    writer, 400, _dumps(_error_body(self.error_format, message, 400)).encode()
                )
                return True
        reply = self._embed_queue.popleft() if self._embed_queue else Reply()
        await self._hold(reply)
        if reply.status >= 400 or reply.body is not None:
            body = reply.body or _error_body(reply.error_format, reply.message, reply.status)
            raw = body.encode() if isinstance(body, str) else _dumps(body).encode()
            await self._send(writer, reply.status, raw, headers=reply.headers)
            return True
        delay = reply.delay or self.embed_delay
        if delay:
            await asyncio.sleep(delay)
        dim = int(payload.get("dimensions") or self.embed_dim)
        data: list[dict[str, Any]] = []
        for index, text in enumerate(texts):
            vector = embed_vector(text, dim)
            encoded: Any = vector
            if b64 and not self.embed_ignore_base64:
                encoded = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
            data.append({"index": index, "object": "embedding", "embedding": encoded})
        if reply.short_by:
            data = data[: -reply.short_by]
        if reply.drop_index and data:
            del data[0]["index"]
        total = sum(counts)
        body = {
            "id": f"embd-{uuid.uuid4().hex}",
            "object": "list",
            "created": 1738753122,
            "model": reply.model or payload.get("model") or self.model,
            "data": data,
            "usage": None
            if reply.no_usage
            else {"prompt_tokens": total, "total_tokens": total, "completion_tokens": 0},
        }
        await self._send(writer, 200, _dumps(body).encode())
        return True

    async def _rerank(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        """vLLM's /v1/rerank: word-overlap scores, best first, cut to `top_n`."""
        try:
            payload = json.loads(request.body)
        except ValueError:
            await self._send(
                writer, 400, _dumps(_error_body(self.error_format, "bad JSON", 400)).encode()
            )
            return True
        query, documents = payload.get("query"), payload.get("documents")
        if not isinstance(query, str) or not isinstance(documents, list):
            # As vLLM's request validation answers a body without them.
            message = "1 validation error for RerankRequest: query and documents are required"
            await self._send(
                writer, 400, _dumps(_error_body(self.error_format, message, 400)).encode()
            )
            return True
        texts = [d if isinstance(d, str) else str(d) for d in documents]
        counts = [rerank_tokens(query, t) for t in texts]
        truncate = payload.get("truncate_prompt_tokens")
        if self.rerank_max_tokens is not None and truncate is None:
            too_long = [c for c in counts if c > self.rerank_max_tokens]
            if too_long:
                message = (
                    f"This model's maximum context length is {self.rerank_max_tokens} tokens. "
                    f"However, you requested {too_long[0]} tokens in the input. Please reduce "
                    "the length of the input."
                )
                await self._send(
                    writer, 400, _dumps(_error_body(self.error_format, message, 400)).encode()
                )
                return True
        reply = self._rerank_queue.popleft() if self._rerank_queue else RerankReply()
        await self._hold(reply)
        if reply.status >= 400 or reply.body is not None:
            body = reply.body or _error_body(reply.error_format, reply.message, reply.status)
            raw = body.encode() if isinstance(body, str) else _dumps(body).encode()
            ctype = "text/plain" if isinstance(body, str) else "application/json"
            await self._send(writer, reply.status, raw, ctype, reply.headers)
            return True
        delay = reply.delay or self.rerank_delay
        if delay:
            await asyncio.sleep(delay)
        fault = reply if isinstance(reply, RerankReply) else RerankReply()
        results = self._rerank_results(query, texts, payload.get("top_n"), fault)
        answer = {
            "id": f"rerank-{uuid.uuid4().hex}",
            "model": reply.model or payload.get("model") or RERANK_MODEL,
            "usage": None if reply.no_usage else {"total_tokens": sum(counts)},
            "results": results,
        }
        await self._send(writer, 200, _dumps(answer).encode())
        return True

    @staticmethod
    def _rerank_results(
        query: str, texts: list[str], top_n: Any, fault: RerankReply
    ) -> list[dict[str, Any]]:
        # vLLM: sorted by score (a stable sort: ties in input order), cut to top_n when > 0.
        order = sorted(range(len(texts)), key=lambda i: -rerank_score(query, texts[i]))
        if isinstance(top_n, int) and top_n > 0 and not fault.ignore_top_n:
            order = order[:top_n]
        results: list[dict[str, Any]] = [
            {
                "index": i,
                "document": {"text": texts[i]},
                "relevance_score": rerank_score(query, texts[i]),
            }
            for i in order
        ]
        if fault.unsorted:
            results.reverse()
        if fault.no_document:
            for result in results:
                del result["document"]
        if fault.drop_result and results:
            results.pop()
        if fault.duplicate_index and len(results) > 1:
            results[1]["index"] = results[0]["index"]
        if fault.index_out_of_range and results:
            results[-1]["index"] = len(texts)
        if fault.bad_score and results:
            results[0]["relevance_score"] = fault.score
        if fault.wrong_document and len(texts) > 1 and results:
            other = (results[0]["index"] + 1) % len(texts)
            results[0]["document"] = {"text": texts[other]}
        return results

    def _unknown_model(self, request: RecordedRequest) -> str | None:
        """The model a POST names when this server does not serve it (vLLM answers 404)."""
        if self.served_models is None:
            return None
        try:
            model = json.loads(request.body).get("model")
        except (ValueError, AttributeError):
            return None
        return model if isinstance(model, str) and model not in self.served_models else None

    def _default_reply(self, payload: dict[str, Any]) -> Reply:
        """What vLLM's constraints make of the request; otherwise the recorded reply."""
        tools = payload.get("tools") or []
        choice = payload.get("tool_choice")
        if tools and (choice == "required" or isinstance(choice, dict)):
            wanted = choice["function"]["name"] if isinstance(choice, dict) else None
            tool = next((t for t in tools if wanted in (None, t["function"]["name"])), tools[0])
            function = tool["function"]
            arguments = instance_of(function.get("parameters") or {"type": "object"})
            call = {"name": function["name"], "arguments": _dumps(arguments)}
            # vLLM: "tool_calls" for required, "stop" for a named function.
            return Reply(tool_calls=[call], finish_reason="stop" if wanted else None)
        messages = payload.get("messages") or [{}]
        last = messages[-1]
        if self.answer_from_tool_results and last.get("role") in ("tool", "ipython"):
            return Reply(text=f"The tool says: {last.get('content')}")
        response_format = payload.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = response_format.get("json_schema", {}).get("schema", {})
            return Reply(text=_dumps(instance_of(schema)))
        if isinstance(payload.get("guided_json"), dict):
            return Reply(text=_dumps(instance_of(payload["guided_json"])))
        if response_format.get("type") == "json_object":
            return Reply(text="{}")
        return Reply()

    def _endpoint_rejection(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        # vLLM validates the request before it looks at what the endpoint supports.
        for message in payload.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            for part in content if isinstance(content, list) else []:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind not in KNOWN_PART_TYPES:
                    return _error_body(self.error_format, f"Unknown part type: {kind}", 400)
        choice = payload.get("tool_choice")
        if payload.get("tools") == []:
            return _error_body(self.error_format, EMPTY_TOOLS, 400)
        if choice not in (None, "none") and payload.get("tools") is None:
            return _error_body(self.error_format, TOOL_CHOICE_WITHOUT_TOOLS, 400)
        if isinstance(choice, dict) and payload.get("tools"):
            wanted = (choice.get("function") or {}).get("name")
            names = {(t.get("function") or {}).get("name") for t in payload["tools"]}
            if wanted not in names:
                return _error_body(self.error_format, TOOL_CHOICE_MISMATCH, 400)
        if self.reject_tools and payload.get("tools"):
            return _error_body(self.error_format, TOOLS_REJECTED, 400)
        kind = (payload.get("response_format") or {}).get("type")
        if (self.reject_response_format and kind == "json_schema") or (
            self.reject_json_object and kind == "json_object"
        ):
            return _error_body(
                "flat", f"response_format type '{kind}' is not supported by this server", 400
            )
        if self.reject_guided_json and "guided_json" in payload:
            return _error_body(
                "flat",
                "1 validation error for ChatCompletionRequest\nguided_json\n  Extra inputs are "
                "not permitted",
                400,
            )
        if self.max_context is not None:
            wanted = _count_prompt_tokens(payload) + int(_max_tokens(payload) or 0)
            if wanted > self.max_context:
                message = (
                    f"This model's maximum context length is {self.max_context} tokens. "
                    f"However, you requested {wanted} tokens "
                    f"({_count_prompt_tokens(payload)} in the messages, "
                    f"{payload.get('max_tokens')} in the completion). "
                    "Please reduce the length of the messages or completion."
                )
                return _error_body(self.error_format, message, 400)
        return None

    # -- replies ----------------------------------------------------------------------------

    def _pieces(self, reply: Reply) -> list[str]:
        if reply.pieces is not None:
            return reply.pieces
        if reply.text is not None:
            words = reply.text.split(" ")
            return [w if i == 0 else " " + w for i, w in enumerate(words)]
        if reply.tool_calls:
            return []
        return list(SEED_PIECES)

    def _generate(self, payload: dict[str, Any], reply: Reply) -> tuple[list[str], str, Any]:
        """Pieces, finish_reason and stop_reason, honouring `stop` and `max_tokens` as vLLM does."""
        pieces = self._pieces(reply)
        finish = self._finish(reply)
        stop_reason: Any = None
        stops = payload.get("stop") or []
        if isinstance(stops, str):
            stops = [stops]
        text = "".join(pieces)
        cut = min(((text.find(s), s) for s in stops if s and s in text), default=None)
        if cut is not None:
            kept, pieces, stop_reason, finish = text[: cut[0]], [], cut[1], "stop"
            for piece in self._pieces(reply):
                if len("".join(pieces)) + len(piece) > len(kept):
                    rest = kept[len("".join(pieces)) :]
                    if rest:
                        pieces.append(rest)
                    break
                pieces.append(piece)
        limit = _max_tokens(payload)
        if isinstance(limit, int) and len(pieces) > limit:
            pieces, finish = pieces[:limit], "length"
        return pieces, finish, stop_reason

    def _usage(self, payload: dict[str, Any], reply: Reply, pieces: list[str]) -> dict[str, Any]:
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = _count_prompt_tokens(payload)
        completion = reply.completion_tokens
        if completion is None:
            completion = len(pieces) + sum(
                1 + len(str(c.get("arguments", ""))) // 4 for c in reply.tool_calls or []
            )
        # vLLM's field order.
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
        }
        if reply.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens}
        return usage

    def _finish(self, reply: Reply) -> str:
        return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")

    def _completion(self, payload: dict[str, Any], reply: Reply) -> dict[str, Any]:
        pieces, finish, stop_reason = self._generate(payload, reply)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(pieces) if pieces or not reply.tool_calls else None,
        }
        calls = [
            {
                "id": call.get("id") or f"chatcmpl-tool-{uuid.uuid4().hex}",
                "type": "function",
                "function": {"name": call["name"], "arguments": call.get("arguments", "{}")},
            }
            for call in reply.tool_calls or []
        ]
        if calls:  # vLLM leaves the key out of a reply without calls
            message["tool_calls"] = calls
        fingerprint = {"system_fingerprint": self.system_fingerprint}
        return {
            "id": reply.id or f"chat-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": reply.created or 1738753122,
            "model": reply.model or payload.get("model") or self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": _logprobs(payload, pieces),
                    "finish_reason": finish,
                    "stop_reason": stop_reason,
                }
            ],
            **(fingerprint if self.system_fingerprint else {}),
            "usage": None if reply.no_usage else self._usage(payload, reply, pieces),
            "prompt_logprobs": None,
        }

    def _events(self, payload: dict[str, Any], reply: Reply) -> list[str]:
        if reply.raw_events is not None:
            return list(reply.raw_events)
        pieces, finish, stop_reason = self._generate(payload, reply)
        head = {
            "id": reply.id or (SEED_ID if reply == Reply() else f"chat-{uuid.uuid4().hex}"),
            "object": "chat.completion.chunk",
            "created": reply.created or SEED_CREATED,
            "model": reply.model or payload.get("model") or self.model,
        }
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            content = delta.get("content")
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": _logprobs(payload, [content]) if content else None,
                "finish_reason": finish,
            }
            if finish is not None:
                choice["stop_reason"] = stop_reason
            value: dict[str, Any] = {**head, "choices": [choice]}
            if reply.usage_null:
                value["usage"] = None
            return _dumps(value)

        events = [chunk({"role": "assistant"})]
        events += [chunk({"content": p}) for p in pieces]
        for index, call in enumerate(reply.tool_calls or []):
            call_id = call.get("id") or f"chatcmpl-tool-{uuid.uuid4().hex}"
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "id": call_id,
                                "type": "function",
                                "index": index,
                                "function": {"name": call["name"]},
                            }
                        ]
                    }
                )
            )
            arguments = str(call.get("arguments", "{}"))
            for start in range(0, len(arguments), 7):
                fragment = arguments[start : start + 7]
                delta: dict[str, Any] = {"index": index, "function": {"arguments": fragment}}
                if reply.repeat_tool_names:
                    delta.update(id=call_id, type="function")
                    delta["function"]["name"] = call["name"]
                events.append(chunk({"tool_calls": [delta]}))
        usage_follows = include_usage and not reply.no_usage
        fingerprint = {"system_fingerprint": self.system_fingerprint}
        if not reply.no_finish:
            # vLLM ends a tool call with an empty piece of its arguments, text with "".
            calls = reply.tool_calls or []
            closing: dict[str, Any] = {"content": ""}
            if calls:
                closing = {"tool_calls": [{"index": len(calls) - 1, "function": {"arguments": ""}}]}
            last = chunk(closing, finish)
            if self.system_fingerprint and not usage_follows:
                last = _dumps({**json.loads(last), **fingerprint})
            events.append(last)
        if usage_follows:
            usage = self._usage(payload, reply, pieces)
            usage_chunk: dict[str, Any] = {**head, "choices": [], "usage": usage}
            if self.system_fingerprint:
                usage_chunk.update(fingerprint)
            events.append(_dumps(usage_chunk))
        if not reply.no_done:
            events.append("[DONE]")
        return events

    async def _stream(
        self, payload: dict[str, Any], reply: Reply, writer: asyncio.StreamWriter
    ) -> bool:
        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            f"x-request-id: req-{uuid.uuid4().hex[:12]}\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        self._sent(200)
        writer.write(head.encode())
        end = "\r\n" if reply.crlf else "\n"
        for number, data in enumerate(self._events(payload, reply)):
            if reply.cut_after is not None and number >= reply.cut_after:
                await writer.drain()
                writer.transport.abort()
                return False
            if reply.stall_after is not None and number >= reply.stall_after:
                await writer.drain()
                await asyncio.sleep(reply.stall_seconds)
                writer.transport.abort()
                return False
            if reply.error_event_after is not None and number == reply.error_event_after:
                error = _error_body(reply.error_format, reply.message, 500)
                await self._write(writer, f"data: {_dumps(error)}{end}{end}".encode(), reply)
                break
            if reply.delay:
                await asyncio.sleep(reply.delay)
            text = f"data: {data}{end}{end}"
            if reply.comments:
                text = f": keep-alive{end}" + text
            await self._write(writer, text.encode(), reply)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _write(self, writer: asyncio.StreamWriter, data: bytes, reply: Reply) -> None:
        size = reply.split or len(data)
        for start in range(0, len(data), size):
            piece = data[start : start + size]
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            if reply.split:
                # Give the kernel a chance to deliver each piece as its own read.
                await asyncio.sleep(0.001)


class ToolEndpoint:
    """One of the three ways an endpoint can treat tools, for parametrized adapter tests."""

    KINDS = ("native", "rejected", "text-in-native")
    # Arguments beyond ASCII: Devanagari, accents, CJK and an emoji (outside the BMP: a
    # surrogate pair when \u-escaped), cut anywhere by the 7- and 9-character stream pieces.
    NON_ASCII: ClassVar[dict[str, str]] = {"city": "पुणे", "note": "São Paulo, 東京 🌧"}

    def __init__(self, emulator: Emulator, kind: str) -> None:
        self.emulator = emulator
        self.kind = kind
        emulator.reject_tools = kind == "rejected"

    def call(self, name: str, arguments: dict[str, Any], call_id: str = "call-1") -> Reply:
        """The reply in which the model calls `name`, as this kind of endpoint sends it."""
        if self.kind == "native":
            return Reply(tool_calls=[{"id": call_id, "name": name, "arguments": _dumps(arguments)}])
        # The characters themselves, as a model writes them (not \u escapes).
        text = json.dumps({"name": name, "parameters": arguments}, ensure_ascii=False)
        # Streamed in pieces, as a model writes it.
        return Reply(pieces=[text[i : i + 9] for i in range(0, len(text), 9)])

    def tools_were_native(self) -> bool:
        """Whether the last request carried `tools` (prompt mode carries none)."""
        return "tools" in self.emulator.requests[-1].json
