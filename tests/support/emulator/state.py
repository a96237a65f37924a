"""The emulator's state: its knobs and their defaults, the queued replies, what it has seen.

Everything a test sets or reads on the emulator, and `reset()`, which puts every knob back
between tests; the waiting (`wait_until`, `starts`, held replies) is here too, since it is
counted per test. The socket itself is `server.Server`; the routes answer from this state.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable

from tests.support.emulator.faults import Reply
from tests.support.emulator.wire import RecordedRequest

DEFAULT_MODEL = "llama3_1_8b_instruct"
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
# The width of the emulator's embedding vectors (`embed_dim`, unless a request asks).
EMBED_DIM = 32


class EmulatorState:
    """The knobs, queues and counters of one emulator (`Emulator` adds the socket)."""

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
