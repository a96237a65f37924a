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

One module per route, over the shared pieces:

- `endpoint`: `Emulator`, the routing and the checks every POST passes (`fault_every`, the
  key, the model);
- `chat` (checks, which reply; `ToolEndpoint`), `chat_reply` (a reply's pieces, usage,
  logprobs; the whole completion), `chat_stream` (the streamed events and stream faults);
- `embeddings`, `rerank`, `models`: the other routes, with their helpers (`embed_vector`,
  `rerank_score`, ...);
- `server`: the loopback HTTP/1.1 server; `state`: the knobs, queues, counters and waiting;
  `faults`: `Reply` and `RerankReply`; `wire`: compact JSON, error bodies, `RecordedRequest`.

Import from here (`tests.support.emulator`): every name tests use is re-exported below.
"""

from tests.support.emulator.chat import (
    EMPTY_TOOLS,
    KNOWN_PART_TYPES,
    TOOL_CHOICE_MISMATCH,
    TOOL_CHOICE_WITHOUT_TOOLS,
    TOOLS_REJECTED,
    ToolEndpoint,
    instance_of,
)
from tests.support.emulator.chat_reply import SEED_CREATED, SEED_ID, SEED_PIECES
from tests.support.emulator.embeddings import embed_tokens, embed_vector
from tests.support.emulator.endpoint import Emulator
from tests.support.emulator.faults import Reply, RerankReply
from tests.support.emulator.rerank import RERANK_MODEL, rerank_score, rerank_tokens
from tests.support.emulator.state import (
    DEFAULT_MAX_MODEL_LEN,
    DEFAULT_MODEL,
    EMBED_DIM,
    HOLD_SECONDS,
    VLLM_FINGERPRINT,
    WAIT_SECONDS,
)
from tests.support.emulator.wire import RecordedRequest

__all__ = [
    "DEFAULT_MAX_MODEL_LEN",
    "DEFAULT_MODEL",
    "EMBED_DIM",
    "EMPTY_TOOLS",
    "HOLD_SECONDS",
    "KNOWN_PART_TYPES",
    "RERANK_MODEL",
    "SEED_CREATED",
    "SEED_ID",
    "SEED_PIECES",
    "TOOLS_REJECTED",
    "TOOL_CHOICE_MISMATCH",
    "TOOL_CHOICE_WITHOUT_TOOLS",
    "VLLM_FINGERPRINT",
    "WAIT_SECONDS",
    "Emulator",
    "RecordedRequest",
    "Reply",
    "RerankReply",
    "ToolEndpoint",
    "embed_tokens",
    "embed_vector",
    "instance_of",
    "rerank_score",
    "rerank_tokens",
]
