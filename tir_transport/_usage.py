"""Token usage: a value type, and `track_usage()` that totals the requests made inside it."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PendingRequest",
    "Usage",
    "UsageTracker",
    "record_usage",
    "request_started",
    "track_usage",
]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one or more requests."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.total_tokens + other.total_tokens,
        )

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any]) -> Usage:
        """Read an OpenAI-style `usage` object (`prompt_tokens`, `completion_tokens`)."""
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        total = usage.get("total_tokens")
        return cls(prompt, completion, int(total) if total is not None else prompt + completion)


class UsageTracker:
    """Running totals: overall, per model, and the number of requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = Usage()
        self._by_model: dict[str, Usage] = {}
        self._requests_by_model: dict[str, int] = {}
        self._without_usage_by_model: dict[str, int] = {}
        self._requests = 0
        self._without_usage = 0
        # Closed blocks count nothing more (a task started inside may finish after the block).
        self._active = False

    def add(self, model: str, usage: Usage | None, served: str | None = None) -> None:
        """Count one finished request; `usage` is None when the server sent none.

        Args:
            model: the model the request named (requests are counted under it).
            usage: the reply's usage, or None.
            served: the model the server said it ran (tokens are counted under it).
        """
        with self._lock:
            self._start(model)
            self._settle(model, served or model, usage)

    # A request is counted when the server takes it (`_start`: no usage yet), and its tokens
    # when they come (`_settle`). One left before then (a stream the caller stopped reading,
    # a timeout, a cut) stays counted, as a request without usage: it may still be billed.

    def _start(self, model: str) -> None:
        self._requests += 1
        self._requests_by_model[model] = self._requests_by_model.get(model, 0) + 1
        # Unknown is not zero: counted apart, so totals never look complete when not.
        self._without_usage += 1
        self._without_usage_by_model[model] = self._without_usage_by_model.get(model, 0) + 1

    def _settle(self, requested: str, model: str, usage: Usage | None) -> None:
        if usage is None:
            self._by_model.setdefault(model, Usage())
            return
        self._without_usage -= 1
        left = self._without_usage_by_model[requested] - 1
        if left:
            self._without_usage_by_model[requested] = left
        else:
            del self._without_usage_by_model[requested]
        self._total = self._total + usage
        self._by_model[model] = self._by_model.get(model, Usage()) + usage

    @property
    def usage(self) -> Usage:
        """The overall totals."""
        return self._total

    @property
    def input_tokens(self) -> int:
        """Prompt tokens, all models."""
        return self._total.input_tokens

    @property
    def output_tokens(self) -> int:
        """Completion tokens, all models."""
        return self._total.output_tokens

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens, all models."""
        return self._total.total_tokens

    @property
    def requests(self) -> int:
        """Requests the server took inside the block (see `track_usage` for which count)."""
        return self._requests

    @property
    def requests_without_usage(self) -> int:
        """Requests whose usage is not known: the token totals leave them out.

        The server sent none, or the request ended before it came (a stream left or cut, a
        timeout), or it is still being answered.
        """
        return self._without_usage

    @property
    def requests_without_usage_by_model(self) -> dict[str, int]:
        """Requests without usage, per model name (models with none are left out)."""
        with self._lock:
            return dict(self._without_usage_by_model)

    def summary(self) -> str:
        """One line for people: the totals, and how many requests they leave out."""
        text = (
            f"{self._requests} requests, {self.input_tokens} input + {self.output_tokens} "
            f"output = {self.total_tokens} tokens"
        )
        if self._without_usage:
            text += (
                f" ({self._without_usage} of {self._requests} requests reported no usage: "
                "not counted)"
            )
        return text

    @property
    def by_model(self) -> dict[str, Usage]:
        """Token totals per model name (as the server reported it, else as requested)."""
        with self._lock:
            return dict(self._by_model)

    @property
    def requests_by_model(self) -> dict[str, int]:
        """Requests per model name (as the request named it)."""
        with self._lock:
            return dict(self._requests_by_model)

    def __repr__(self) -> str:
        return (
            f"UsageTracker(requests={self._requests}, input_tokens={self.input_tokens}, "
            f"output_tokens={self.output_tokens}, total_tokens={self.total_tokens}, "
            f"requests_without_usage={self._without_usage})"
        )


_current: ContextVar[tuple[UsageTracker, ...]] = ContextVar("tir_usage_trackers")


@contextmanager
def track_usage() -> Iterator[UsageTracker]:
    """Total the token usage of every request made inside the block, and only those.

    Every request the server took counts, including each retry of one and requests that ended
    without a reply the caller saw: a stream left after its first chunk, a stream cut or
    ended by an error event, a request that timed out after it was sent (each try). Their
    tokens count when the server reported them; when it did not (or not yet), the request
    counts in `requests_without_usage` and never as zero tokens. A request the server refused
    with an error status (a 401, a 429, a 400) or that never reached it (no connection) is not
    counted: the server did no work for it.

    Requests of both adapters and of the core count, and so do those made in what inherits
    the block's context: asyncio tasks (`asyncio.gather`, `create_task`) and context-copying
    executors (LangChain's `batch`) started inside it. A plain `threading.Thread` or
    `ThreadPoolExecutor` does not inherit the context, so its requests are not counted (in a
    server, they may belong to another user); to count them, run the thread's work in a copy
    of the block's context: `pool.submit(contextvars.copy_context().run, fn, *args)`.
    Concurrent blocks (two users served at once, in threads or tasks) each see exactly their
    own requests. Blocks nest: an inner block's requests count in the outer one too.

    Example:
        >>> with track_usage() as usage:
        ...     llm.invoke("hi")  # doctest: +SKIP
        >>> usage.total_tokens  # doctest: +SKIP
    """
    tracker = UsageTracker()
    tracker._active = True
    token = _current.set((*_current.get(()), tracker))
    try:
        yield tracker
    finally:
        tracker._active = False
        _current.reset(token)


def record_usage(model: str, usage: Usage | None, served: str | None = None) -> None:
    """Count a finished request in every tracker open in the caller's context (see `add`)."""
    for tracker in _current.get(()):
        if tracker._active:
            tracker.add(model, usage, served)


class PendingRequest:
    """A request the server took whose usage is not known yet (a stream being read).

    It counts, in the trackers open where it started, as soon as it is made; `finish` adds its
    usage once, whatever context (another task, the garbage collector) ends it.
    """

    __slots__ = ("_done", "_lock", "_model", "_trackers")

    def __init__(self, model: str, trackers: tuple[UsageTracker, ...]) -> None:
        self._model = model
        self._trackers = trackers
        self._done = False
        self._lock = threading.Lock()

    def finish(self, model: str | None, usage: Usage | None) -> None:
        """Settle the request: its usage (None: unknown), under the model the server named."""
        with self._lock:
            if self._done:
                return
            self._done = True
        for tracker in self._trackers:
            with tracker._lock:
                # A closed block counts nothing more: the request stays without usage there.
                if tracker._active:
                    tracker._settle(self._model, model or self._model, usage)


_NOTHING_OPEN = PendingRequest("", ())
_NOTHING_OPEN._done = True


def request_started(model: str) -> PendingRequest:
    """Count a request the server took, in every tracker open in the caller's context."""
    trackers = tuple(t for t in _current.get(()) if t._active)
    if not trackers:
        return _NOTHING_OPEN  # the common case: nobody counts, nothing to settle
    for tracker in trackers:
        with tracker._lock:
            tracker._start(model)
    return PendingRequest(model, trackers)
