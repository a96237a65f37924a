"""The error hierarchy and the one place where server replies become errors."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from ._secrets import MIN_SECRET_CHARS, scrub_bytes, scrub_secret

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ConflictError",
    "ContextLengthExceededError",
    "InputError",
    "InvalidResponseError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "ServerError",
    "StreamInterruptedError",
    "StructuredOutputError",
    "TIRError",
    "UnsupportedContentError",
    "check_texts",
    "error_from_event",
    "error_from_response",
    "quote",
    "request_id_of",
]

# An error body can be a whole HTML page from a gateway; quote only its start.
MAX_QUOTED_CHARS = 1000

_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "cf-ray")
_CONTEXT_RE = re.compile(r"maximum context length|context length|context window", re.IGNORECASE)


class TIRError(Exception):
    """Base class of every error this library raises."""

    #: Seconds the server asked us to wait (`Retry-After`), when it did.
    retry_after: float | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.request_id = request_id
        self.body = body

    def __str__(self) -> str:
        parts = [self.message]
        if self.status_code is not None:
            parts.append(f"(HTTP {self.status_code})")
        if self.request_id:
            parts.append(f"[request id {self.request_id}]")
        return " ".join(parts)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor arguments do not survive the default pickling.
        return (
            _rebuild_error,
            (type(self), self.message, self.status_code, self.request_id, self.body),
            # Attributes set after construction (retry_after, input_index) come along too.
            dict(self.__dict__),
        )


def _rebuild_error(
    cls: type[TIRError], message: str, status: int | None, rid: str | None, body: Any
) -> TIRError:
    return cls(message, status_code=status, request_id=rid, body=body)


class ConfigurationError(TIRError, ValueError):
    """The configuration cannot make a request (missing key or project, unsafe URL)."""


class InputError(TIRError, ValueError):
    """An input cannot be sent as it is (an empty text to embed, say); nothing was sent."""


class UnsupportedContentError(InputError):
    """A chat message carries content a text-only model cannot take (an image, audio, a file).

    Raised by both chat adapters before anything is sent (LangChain's also for a content block
    it does not know, rather than dropping it). One class for both: `langchain_tir` and
    `llama_index_tir` export this one. An `InputError`, being the caller's input refused as it
    stands: so a `ValueError`, as it always was, and a `TIRError`, as every error of this
    library is.
    """


def check_texts(texts: Sequence[Any], noun: str, verb: str, why: str, example: str) -> None:
    """Refuse a text that is not a str, or is empty or blank, naming the caller's index.

    For the APIs that take lists of texts: embeddings (`noun="text"`, `verb="embed"`) and
    rerank (`"document"`, `"rerank"`). `why`: why a blank one means nothing; `example`: how
    to drop them.

    Raises:
        InputError: the first such text.
    """
    doing = "embedding" if verb == "embed" else f"{verb}ing"
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(
                f"{noun} {index} is a {type(text).__name__}, not a str: {verb} strings only"
            )
        if not text.strip():
            raise InputError(
                f"{noun} {index} is empty or blank: {why}. Drop empty {noun}s before {doing} "
                f"(e.g. `{example}`)."
            )
        if not text.isascii() and not is_utf8(text):
            raise InputError(
                f"{noun} {index} is not valid text: it holds a lone surrogate (bytes decoded "
                "with errors='surrogateescape', or a PDF extractor's half of a pair), which "
                "cannot be sent as UTF-8. Fix the text, e.g. "
                "`text.encode('utf-8', 'replace').decode()`."
            )


def is_utf8(text: str) -> bool:
    """Whether `text` can be sent as UTF-8 (no lone surrogates)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class APIStatusError(TIRError):
    """The server answered with an error status."""


class BadRequestError(APIStatusError):
    """HTTP 400 or 422: the server rejected the request as invalid."""


class ContextLengthExceededError(BadRequestError):
    """The prompt plus `max_tokens` (or a text to embed) do not fit the model's context window.

    For embeddings, `input_index` is the index of the first too-long text in the caller's list.
    """

    input_index: int | None = None


class AuthenticationError(APIStatusError):
    """HTTP 401: the API key is missing, wrong or expired."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403: the key may not use this project or model."""


class NotFoundError(APIStatusError):
    """HTTP 404: no such project, model or endpoint at this URL."""


class RequestTimeoutError(APIStatusError):
    """HTTP 408: the server timed the request out."""


class ConflictError(APIStatusError):
    """HTTP 409: the server reported a conflict."""


class RateLimitError(APIStatusError):
    """HTTP 429: too many requests."""


class ServerError(APIStatusError):
    """HTTP 5xx: the server failed."""


class APIConnectionError(TIRError):
    """The request could not reach the server, or the connection failed."""


class APITimeoutError(APIConnectionError):
    """The server did not answer (or send the next stream chunk) within the timeout."""


class StreamInterruptedError(TIRError):
    """A stream broke off before its end, or carried an error event.

    `empty_stream` is set when the server sent no event at all (tried once more, not more).
    """

    empty_stream: bool = False


class InvalidResponseError(TIRError):
    """The server sent something that is not the OpenAI chat-completions format."""


class StructuredOutputError(TIRError):
    """The model's reply does not match the schema asked for, even after a repair attempt."""


# The one status table; 5xx falls through to ServerError below.
_STATUS_TABLE: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: RequestTimeoutError,
    409: ConflictError,
    422: BadRequestError,
    429: RateLimitError,
}


def quote(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """The start of a server's text, for an error message (a gateway may send a whole page)."""
    text = text.strip()
    if len(text) > limit:
        return text[:limit] + f"... [{len(text) - limit} more characters]"
    return text


def _message_from_body(body: Any) -> str | None:
    """Find the human message in the error shapes vLLM, llama.cpp and gateways send."""
    if isinstance(body, str):
        return body or None
    if not isinstance(body, Mapping):
        return None
    error = body.get("error")
    if isinstance(error, Mapping):
        message = error.get("message")
        if isinstance(message, str) and message:
            return message
        if error.get("type"):
            return f"{error['type']} (the server gave no message)"
    if isinstance(error, str) and error:
        return error
    for key in ("message", "detail", "msg"):
        value = body.get(key)
        if isinstance(value, str):
            return value
        if value is not None:
            return json.dumps(value)
    return None


def request_id_of(headers: Mapping[str, str] | None, secret: str | None = None) -> str | None:
    """The request id a server or gateway put in its reply's headers, if any.

    `secret`: the API key, hidden if the header echoes it (a gateway may put the
    Authorization value there).
    """
    if not headers:
        return None
    for name in _REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return scrub_secret(value, secret)
    return None


def _scrub_body(body: Any, secret: str | None) -> Any:
    if isinstance(body, str):
        return scrub_secret(body, secret)
    if secret and len(secret) >= MIN_SECRET_CHARS and body is not None:
        text = json.dumps(body)
        if secret in text:
            return json.loads(scrub_secret(text, secret))
    return body


_GENAI_RE = re.compile(r"/genai/([^/?]+)/v1/")
_ENDPOINT_RE = re.compile(r"/project/p-([^/?]+)/endpoint/is-([^/?]+)/v1/")
EXPIRED_KEY_HINT = (
    "The TIR API token was refused: it may be wrong, or expired (TIR tokens last 365 days). "
    "Create a new one under API Tokens in the TIR dashboard and set TIR_API_KEY."
)


def _hint(cls: type[APIStatusError], url: str | None) -> str | None:
    """What to do about an error whose usual cause is known."""
    if cls is AuthenticationError:
        return EXPIRED_KEY_HINT
    if cls is NotFoundError and url:
        genai = _GENAI_RE.search(url)
        if genai:
            model = unquote(genai.group(1))
            return (
                f"TIR has no GenAI model with the API name {model!r} in this project: check "
                "the API name on the model's page in TIR (it can differ from the display "
                "name, and models leave the catalog)."
            )
        endpoint = _ENDPOINT_RE.search(url)
        if endpoint:
            return (
                f"TIR has no model endpoint is-{unquote(endpoint.group(2))} in project "
                f"p-{unquote(endpoint.group(1))}: check the endpoint id, and that the "
                "endpoint is running, in TIR."
            )
    return None


def error_from_response(
    status_code: int,
    content: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    secret: str | None = None,
    url: str | None = None,
) -> APIStatusError:
    """Build the error for an HTTP error reply.

    Args:
        status_code: the HTTP status.
        content: the raw body.
        headers: the reply's headers (for the request id).
        secret: the API key, scrubbed from anything quoted.
        url: the request's URL; a 404 on a GenAI URL then names the model.

    Returns:
        An instance of the class the status table gives (`ContextLengthExceededError` for a
        400 about the context length).
    """
    # Hidden first, in the raw reply: before anything below decodes, quotes or cuts it.
    text = scrub_bytes(content, secret).decode("utf-8", errors="replace")
    body: Any
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError:
        body = text
    message = _message_from_body(body) or text or f"HTTP {status_code} with an empty body"
    cls: type[APIStatusError] = _STATUS_TABLE.get(
        status_code, ServerError if status_code >= 500 else APIStatusError
    )
    # Classified on the server's own words, before anything is hidden in them.
    if cls is BadRequestError and _CONTEXT_RE.search(message):
        cls = ContextLengthExceededError
    message = quote(message)
    hint = _hint(cls, url)
    if hint:
        message = f"{hint} The server said: {message}"
    body = quote(body) if isinstance(body, str) else body
    request_id = request_id_of(headers, secret)
    return cls(message, status_code=status_code, request_id=request_id, body=body)


def is_error_event(payload: Mapping[str, Any]) -> bool:
    """Whether a decoded stream event is an error (vLLM's flat or nested form)."""
    return "error" in payload or payload.get("object") == "error"


def error_from_event(
    payload: Mapping[str, Any],
    *,
    request_id: str | None = None,
    secret: str | None = None,
) -> TIRError:
    """Build the error for an error event inside an HTTP 200 stream.

    A context-length complaint keeps its own class; everything else is a
    `StreamInterruptedError`, because the stream stopped short of its end.
    """
    raw = scrub_secret(_message_from_body(payload) or json.dumps(payload), secret)
    message = quote(raw)
    body = _scrub_body(dict(payload), secret)
    code: Any = payload.get("code")
    error = payload.get("error")
    if isinstance(error, Mapping):
        code = error.get("code", code)
    status = code if isinstance(code, int) else None
    if _CONTEXT_RE.search(raw):
        return ContextLengthExceededError(
            message, status_code=status, request_id=request_id, body=body
        )
    return StreamInterruptedError(
        f"the server reported an error mid-stream: {message}",
        status_code=status,
        request_id=request_id,
        body=body,
    )
