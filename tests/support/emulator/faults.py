"""The scripted replies: `Reply` (every route) and `RerankReply`, with their fault knobs.

Queued per route (`Emulator.queue`, `queue_embeddings`, `queue_rerank`); a route with none
queued answers as vLLM would. The per-endpoint fault knobs (tool parsing off, context windows,
a required key, `fault_every`) live on the emulator (`state.EmulatorState`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
