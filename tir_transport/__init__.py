"""Framework-free core of tir-llama: configuration, SSE, wire formats, errors, retries, clients.

Importing this package imports neither LangChain nor LlamaIndex.
"""

from ._arguments import move_unknown_arguments
from ._client import TIRClient
from ._config import (
    DEFAULT_HOST,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT,
    EMBEDDING_MODEL_HINT,
    TIRConfig,
)
from ._connection import CONNECTION_FIELDS, TIRConnection, TIREmbeddingsConnection
from ._embeddings import (
    EmbeddingsReply,
    build_embeddings_payload,
    check_inputs,
    decode_base64,
    parse_embeddings,
)
from ._embeddings_client import (
    DEFAULT_EMBED_BATCH_SIZE,
    DEFAULT_EMBED_CONCURRENCY,
    EmbeddingsClient,
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
    error_from_event,
    error_from_response,
    scrub_secret,
)
from ._limits import Limits, RatePacer
from ._models import KNOWN_CONTEXT_WINDOWS, context_window
from ._negotiate import forget_endpoints
from ._retry import RetryPolicy, is_retryable, parse_retry_after
from ._sse import ServerSentEvent, SSEDecoder
from ._tools import TextToolCallFilter, ToolMode, parse_text_tool_calls, to_prompt_mode
from ._usage import Usage, UsageTracker, record_usage, track_usage
from ._wire import (
    ChatChunk,
    ChatCompletion,
    ToolCall,
    ToolCallAccumulator,
    ToolCallDelta,
    build_payload,
    check_single_choice,
    parse_chunk,
    parse_completion,
)

__version__ = "0.1.0"

__all__ = [
    "CONNECTION_FIELDS",
    "DEFAULT_EMBED_BATCH_SIZE",
    "DEFAULT_EMBED_CONCURRENCY",
    "DEFAULT_HOST",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT",
    "EMBEDDING_MODEL_HINT",
    "KNOWN_CONTEXT_WINDOWS",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ChatChunk",
    "ChatCompletion",
    "ConfigurationError",
    "ConflictError",
    "ContextLengthExceededError",
    "EmbeddingsClient",
    "EmbeddingsReply",
    "InputError",
    "InvalidResponseError",
    "Limits",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RatePacer",
    "RequestTimeoutError",
    "RetryPolicy",
    "SSEDecoder",
    "ServerError",
    "ServerSentEvent",
    "StreamInterruptedError",
    "StructuredOutputError",
    "TIRClient",
    "TIRConfig",
    "TIRConnection",
    "TIREmbeddingsConnection",
    "TIRError",
    "TextToolCallFilter",
    "ToolCall",
    "ToolCallAccumulator",
    "ToolCallDelta",
    "ToolMode",
    "Usage",
    "UsageTracker",
    "__version__",
    "build_embeddings_payload",
    "build_payload",
    "check_inputs",
    "check_single_choice",
    "context_window",
    "decode_base64",
    "error_from_event",
    "error_from_response",
    "forget_endpoints",
    "is_retryable",
    "move_unknown_arguments",
    "parse_chunk",
    "parse_completion",
    "parse_embeddings",
    "parse_retry_after",
    "parse_text_tool_calls",
    "record_usage",
    "scrub_secret",
    "to_prompt_mode",
    "track_usage",
]
