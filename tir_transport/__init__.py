"""Framework-free core of tir-llama: configuration, SSE, wire formats, errors, retries, clients.

Importing this package imports neither LangChain nor LlamaIndex. Everything public is imported
here (`__all__`); every module and folder below is internal, its name starting with `_`, except
`adapter`: what tir-llama's own adapters and CLI need beyond the user API (not a user API; may
change between minor versions). Floor by floor, each part importing only the floors below
it (tests/test_packaging.py reads the imports and holds them to it):

- pure pieces: `_secrets` (the key hidden in what we show, refused in request fields),
  `_sse` (bytes to events), `_peer_names` (the peers' arguments we refuse); `_errors`
  (status to class, messages); `_api_key` (a pasted key cleaned or refused); `_config`
  (TIRConfig, URLs, the environment), `_retry` (retry or not, how long), `_limits` (in
  flight, per minute, back-off), `_usage`.
- the one transport: `_transport/` (`transport` the transport, GET and POST with retries,
  limits and error mapping; `send` the sync loop and `asend` its async twin, per engine;
  `pools` the pools per process and per event loop; `stream` the streamed replies; `replies`
  a reply as the loops see it, whatever the engine; `u3` and `aio` the default engine's
  urllib3 (sync) and aiohttp (async) sides; `failures` the HTTP libraries' failures as
  ours; `keys` the keys hidden in the HTTP libraries' logs; `plans` the drivers of sans-IO
  request plans and many requests in flight; `api` the per-API clients' base).
- a folder per API, side by side, the same file name for the same role: `wire` the wire
  format (building requests, reading replies, no I/O), `client` the thin client over the
  transport.
  - `_chat/`: `wire`, `client`; `negotiate` the endpoint's fallbacks (plans, streamed or
    not), with `tools` the tool prompt format, `tool_stream` the stream filter,
    `structured` the structured-output fallbacks.
  - `_embeddings/`: `wire`, `client`.
  - `_rerank/`: `wire`, `client`.
  - `_models/`: `known` (what is known of each model by API name, no I/O), `wire`, `client`
    (`GET /models`: the window an endpoint serves).
- above chat: `_tokens/` (`tokenizer` Meta's tokenizers, offline; `prompt` Llama's chat
  frame as vLLM renders it, and the prompt counts), `_arguments` (an adapter's constructor
  arguments sorted as the peers sort them).
- `_connection`: the pydantic connection model every adapter class inherits.
"""

from ._arguments import move_unknown_arguments as move_unknown_arguments
from ._chat.client import AsyncChatStream, ChatClient
from ._chat.negotiate import forget_endpoints as forget_endpoints
from ._chat.tools import ToolMode
from ._chat.wire import (
    ChatChunk,
    ChatCompletion,
    ToolCall,
    ToolCallAccumulator,
    ToolCallDelta,
    build_payload,
)
from ._chat.wire import check_single_choice as check_single_choice
from ._config import (
    DEFAULT_HOST,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT,
    EMBEDDING_MODEL_HINT,
    TIRConfig,
)
from ._connection import CONNECTION_FIELDS as CONNECTION_FIELDS
from ._connection import (
    TIRConnection,
    TIREmbeddingsConnection,
    TIRRerankConnection,
)
from ._embeddings.client import (
    DEFAULT_EMBED_BATCH_SIZE,
    EmbeddingsClient,
)
from ._embeddings.wire import check_inputs as check_inputs
from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    ContextLengthExceededError,
    InputError,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    StreamInterruptedError,
    StructuredOutputError,
    TIRError,
)
from ._limits import Limits, RatePacer
from ._models.known import context_window
from ._rerank.client import (
    DEFAULT_RERANK_BATCH_SIZE,
    DEFAULT_RERANK_TOP_N,
    RerankClient,
)
from ._rerank.wire import RerankResult
from ._retry import RetryPolicy
from ._secrets import scrub_secret
from ._tokens.prompt import count_message_tokens
from ._tokens.tokenizer import ApproximateTokenCountWarning, Tokenizer, tokenizer_for
from ._transport import Transport
from ._usage import Usage, UsageTracker, track_usage
from ._version import __version__

# The chat client's name in 0.1.0, kept so that code written for it still runs.
TIRClient = ChatClient

# The user API. Also importable from here, for code written against 0.2.0, but not part of
# it: what only tir-llama's own adapters need (`tir_transport.adapter` has them) and
# `forget_endpoints`, a test hook: `CONNECTION_FIELDS`, `move_unknown_arguments`,
# `check_inputs`, `check_single_choice`. `build_payload` and `ToolCallAccumulator` stay: a
# `ChatClient` takes a payload, and a stream's tool calls come in fragments.
__all__ = [
    "DEFAULT_EMBED_BATCH_SIZE",
    "DEFAULT_HOST",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MODEL",
    "DEFAULT_RERANK_BATCH_SIZE",
    "DEFAULT_RERANK_TOP_N",
    "DEFAULT_TIMEOUT",
    "EMBEDDING_MODEL_HINT",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "ApproximateTokenCountWarning",
    "AsyncChatStream",
    "AuthenticationError",
    "BadRequestError",
    "ChatChunk",
    "ChatClient",
    "ChatCompletion",
    "ConfigurationError",
    "ConflictError",
    "ContextLengthExceededError",
    "EmbeddingsClient",
    "InputError",
    "InvalidResponseError",
    "Limits",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RatePacer",
    "RequestTimeoutError",
    "RerankClient",
    "RerankResult",
    "RetryPolicy",
    "ServerError",
    "StreamInterruptedError",
    "StructuredOutputError",
    "TIRConfig",
    "TIRConnection",
    "TIREmbeddingsConnection",
    "TIRError",
    "TIRRerankConnection",
    "Tokenizer",
    "ToolCall",
    "ToolCallAccumulator",
    "ToolCallDelta",
    "ToolMode",
    "Transport",
    "Usage",
    "UsageTracker",
    "__version__",
    "build_payload",
    "context_window",
    "count_message_tokens",
    "scrub_secret",
    "tokenizer_for",
    "track_usage",
]
