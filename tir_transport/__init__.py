"""Framework-free core of tir-llama: configuration, SSE, wire formats, errors, retries, clients.

Importing this package imports neither LangChain nor LlamaIndex. Its modules, pure first and
I/O at the edge:

- settings: `_config` (TIRConfig, URLs, environment), `_connection` (the pydantic connection
  model every adapter class inherits), `_arguments`, `_models` (what is known per model).
- pure pieces: `_sse` (bytes to events), `_errors` (status to class, messages, key hiding),
  `_retry` (retry or not, how long), `_limits` (in flight, per minute, back-off), `_usage`,
  `_tokens` (Llama's tokenizer and chat frame).
- the one HTTP layer: `_http` (pools, auth, the request loop for replies and streams, and the
  drivers of sans-IO request plans), used by every API.
- one module per API, each building requests and reading replies only: chat (`_chat_wire`
  the wire format, `_chat` the client; `_negotiate` the endpoint's fallbacks, with `_tools`
  the tool prompt format, `_tool_stream` the stream filter, `_structured` the structured-output
  fallbacks), embeddings (`_embeddings` wire, `_embeddings_client`), rerank (`_rerank`).
"""

from ._arguments import move_unknown_arguments
from ._chat.client import AsyncChatStream, ChatClient
from ._chat.negotiate import forget_endpoints
from ._chat.tools import ToolMode
from ._chat.wire import (
    ChatChunk,
    ChatCompletion,
    ToolCall,
    ToolCallAccumulator,
    ToolCallDelta,
    build_payload,
    check_single_choice,
)
from ._config import (
    DEFAULT_HOST,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT,
    EMBEDDING_MODEL_HINT,
    TIRConfig,
)
from ._connection import (
    CONNECTION_FIELDS,
    TIRConnection,
    TIREmbeddingsConnection,
    TIRRerankConnection,
)
from ._embeddings.client import (
    DEFAULT_EMBED_BATCH_SIZE,
    EmbeddingsClient,
)
from ._embeddings.wire import (
    check_inputs,
)
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
    scrub_secret,
)
from ._limits import Limits, RatePacer
from ._models import context_window
from ._rerank.wire import (
    DEFAULT_RERANK_BATCH_SIZE,
    DEFAULT_RERANK_TOP_N,
    RerankClient,
    RerankResult,
)
from ._retry import RetryPolicy
from ._tokens.tokenizer import (
    ApproximateTokenCountWarning,
    Tokenizer,
    count_message_tokens,
    tokenizer_for,
)
from ._usage import Usage, UsageTracker, track_usage

# The distribution's one version: hatchling reads it from here at build time (pyproject.toml);
# tests/test_packaging.py holds it equal to CHANGELOG.md's newest release.
__version__ = "0.2.0"

# The chat client's name in 0.1.0, kept so that code written for it still runs.
TIRClient = ChatClient

__all__ = [
    "CONNECTION_FIELDS",
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
    "Usage",
    "UsageTracker",
    "__version__",
    "build_payload",
    "check_inputs",
    "check_single_choice",
    "context_window",
    "count_message_tokens",
    "forget_endpoints",
    "move_unknown_arguments",
    "scrub_secret",
    "tokenizer_for",
    "track_usage",
]
