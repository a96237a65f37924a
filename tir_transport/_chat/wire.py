"""The OpenAI chat-completions wire format as vLLM speaks it: payloads in, typed values out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import InvalidResponseError, error_from_event, is_error_event, quote
from .._json import loads
from .._secrets import refuse_secrets, scrub_secret
from .._usage import Usage

__all__ = [
    "DONE",
    "ChatChunk",
    "ChatCompletion",
    "ToolCall",
    "ToolCallAccumulator",
    "ToolCallDelta",
    "build_payload",
    "check_single_choice",
    "message_text",
    "parse_chunk",
    "parse_completion",
]

DONE = "[DONE]"

# How much of an unreadable chunk an error quotes.
_QUOTE_CHARS = 200


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call; `arguments` is the JSON text the model wrote (maybe invalid)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call, keyed by `index`."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


@dataclass(frozen=True, slots=True)
class ChatCompletion:
    """A whole (non-streamed) reply, first choice."""

    id: str | None
    model: str | None
    text: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str | None
    stop_reason: str | int | None
    usage: Usage | None
    raw: dict[str, Any] = field(repr=False)


# Not frozen: a frozen dataclass costs 5x more to build, and one is built per streamed token.
@dataclass(slots=True)
class ChatChunk:
    """One streamed chunk, first choice; the usage chunk has no choice and carries `usage`.

    Treat it as read-only; `dataclasses.replace` makes a changed copy.
    """

    id: str | None
    model: str | None
    text: str | None
    role: str | None
    tool_calls: tuple[ToolCallDelta, ...]
    finish_reason: str | None
    stop_reason: str | int | None
    usage: Usage | None
    raw: dict[str, Any] = field(repr=False)


def build_payload(
    messages: Sequence[Mapping[str, Any]],
    model: str,
    *,
    stream: bool = False,
    include_usage: bool = True,
    extra_body: Mapping[str, Any] | None = None,
    key_to_refuse: str | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Build a chat-completions request body.

    Args:
        messages: OpenAI-style message dicts.
        model: the model name for the body's `model`.
        stream: whether to stream; `stream_options` (the caller's, with `include_usage`)
            are sent only then: vLLM refuses them on other requests.
        include_usage: ask for the usage chunk at the end of a stream.
        extra_body: fields sent as they are, last (vLLM's `top_k`, `repetition_penalty`...).
        key_to_refuse: the API key: a request field holding it is refused.
        **params: request fields (`temperature`, `max_tokens`, `tools`...); those that are
            None are not sent, so the server's defaults apply.

    Returns:
        The JSON-ready payload.

    Raises:
        ValueError: no messages, `n` above 1 (see `check_single_choice`), a request
            field named like a secret (`api_key`, `hf_token`...) or holding `key_to_refuse`,
            or one of the openai client's options (`extra_headers`, `extra_query`, `timeout`).
    """
    if not messages:
        raise ValueError("messages is empty: a chat request needs at least one message")
    payload: dict[str, Any] = {"model": model, "messages": list(messages)}
    for key, value in params.items():
        if value is not None:
            if key in _SDK_OPTIONS:
                raise ValueError(
                    f"{key!r} is an option of the openai client, not a request field: sent in "
                    f"the body it would not take effect. {_SDK_OPTIONS[key]}"
                )
            payload[key] = value
    if payload.get("tools") == []:
        # `bind_tools([])`: no tools. Sent as `[]`, the chat template would still frame the
        # prompt for tools (56 tokens of it); OpenAI's API and vLLM refuse an empty list
        # outright. Its `tool_choice` goes too: vLLM refuses one without `tools`.
        del payload["tools"]
        payload.pop("parallel_tool_calls", None)
        payload.pop("tool_choice", None)
    if extra_body:
        payload.update(extra_body)
    # The caller's own `stream_options` (OpenAILike users pass them for vLLM's usage) are
    # kept on a stream, with the usage this needs; vLLM refuses them on any other request.
    options = payload.pop("stream_options", None)
    if stream:
        payload["stream"] = True
        kept = {**options} if isinstance(options, Mapping) else {}
        if include_usage:
            kept["include_usage"] = True
        if kept:
            payload["stream_options"] = kept
    check_single_choice(payload)
    # Every field but the conversation (what the user says is theirs to say) and the schemas
    # (tool definitions, a response format: walking them for the key cost milliseconds a call
    # with 50 tools): per-call kwargs, model_kwargs / additional_kwargs and extra_body all end
    # up here. Their names are checked all the same.
    fields = {k: (None if k in _SCHEMAS else v) for k, v in payload.items() if k != "messages"}
    refuse_secrets(fields, key_to_refuse)
    return payload


# The openai SDK's per-request options, which programs written for ChatOpenAI or OpenAILike
# pass among the request's fields (`model_kwargs`, `additional_kwargs`, a call's kwargs): the
# SDK takes them out of the body. What to do instead, for each.
_SDK_OPTIONS = {
    "extra_headers": "Pass default_headers={...} to the model: they go with every request.",
    "extra_query": "TIR's chat API takes no query parameters.",
    "timeout": "Pass timeout=... (seconds) to the model.",
}


def message_text(content: Any) -> str:
    """A message's content as text: text parts joined by newlines, as vLLM joins them."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))


def _reply_text(content: Any) -> str | None:
    # OpenAI and vLLM send a string; some OpenAI-compatible gateways send a list of parts.
    # Their text parts are read as one string, as langchain-core's `message.text` reads them.
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type", "text") == "text"
        )
    return str(content)


_SCHEMAS = frozenset({"tools", "tool_choice", "response_format", "guided_json"})


def check_single_choice(fields: Mapping[str, Any]) -> None:
    """Refuse `n` above 1: the server would make (and bill) n answers; one is returned.

    Raises:
        ValueError: `n` is more than 1.
    """
    n = fields.get("n")
    if n is None or n == 1:
        return
    raise ValueError(
        f"n={n!r} is not supported: the server would generate and bill {n} answers, and a chat "
        "call returns one. For several answers, send the prompt several times (in LangChain "
        "llm.batch([prompt] * n), with a temperature above 0)."
    )


def _raise_if_error(data: Mapping[str, Any], request_id: str | None, secret: str | None) -> None:
    if is_error_event(data):
        raise error_from_event(data, request_id=request_id, secret=secret)


def _usage(data: Mapping[str, Any]) -> Usage | None:
    usage = data.get("usage")
    return Usage.from_openai(usage) if isinstance(usage, Mapping) else None


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    if not raw:
        return ()
    calls = []
    for i, call in enumerate(raw):
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            # Some servers send an object instead of the JSON text.
            arguments = json.dumps(arguments if arguments is not None else {})
        calls.append(
            ToolCall(
                id=call.get("id") or f"call_{i}",
                name=function.get("name") or "",
                arguments=arguments,
            )
        )
    return tuple(calls)


def _malformed(what: str, data: Any, request_id: str | None, e: Exception) -> InvalidResponseError:
    error = InvalidResponseError(
        f"the server sent a malformed {what}: {quote(json.dumps(data, default=str), _QUOTE_CHARS)}",
        request_id=request_id,
    )
    error.__cause__ = e
    return error


def parse_completion(
    data: Any, *, request_id: str | None = None, secret: str | None = None
) -> ChatCompletion:
    """Read a non-streamed reply (already JSON-decoded).

    `secret` (the API key) is hidden from an error object's message and body.

    Raises:
        TIRError: the body is an error object, or not a chat completion.
    """
    if not isinstance(data, dict):
        raise InvalidResponseError(
            f"expected a JSON object, got: {quote(json.dumps(data), _QUOTE_CHARS)}",
            request_id=request_id,
        )
    _raise_if_error(data, request_id, secret)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise InvalidResponseError(
            f"the reply has no choices: {quote(json.dumps(data), _QUOTE_CHARS)}",
            request_id=request_id,
        )
    try:
        return _completion(data, choices[0])
    except (AttributeError, TypeError, ValueError, KeyError) as e:
        raise _malformed("reply", data, request_id, e) from e


def _completion(data: dict[str, Any], choice: dict[str, Any]) -> ChatCompletion:
    message = choice.get("message") or {}
    return ChatCompletion(
        id=data.get("id"),
        model=data.get("model"),
        text=_reply_text(message.get("content")),
        tool_calls=_tool_calls(message.get("tool_calls")),
        finish_reason=choice.get("finish_reason"),
        stop_reason=choice.get("stop_reason"),
        usage=_usage(data),
        raw=data,
    )


def parse_chunk(
    text: str, *, request_id: str | None = None, secret: str | None = None
) -> ChatChunk:
    """Read one stream event's `data` (not `[DONE]`).

    `secret` (the API key) is hidden from any error's message and body: a gateway may echo
    the request's headers back.

    Raises:
        InvalidResponseError: the data is not JSON or not a chunk; the message quotes its start.
        StreamInterruptedError: the event is an error event (flat or nested vLLM form).
    """
    try:
        data = loads(text)
    except ValueError as e:
        raise InvalidResponseError(
            "the server sent a stream chunk that is not JSON: "
            f"{quote(scrub_secret(text, secret), _QUOTE_CHARS)!r}",
            request_id=request_id,
        ) from e
    if not isinstance(data, dict):
        raise InvalidResponseError(
            "the server sent a stream chunk that is not an object: "
            f"{quote(scrub_secret(text, secret), _QUOTE_CHARS)!r}",
            request_id=request_id,
        )
    try:
        return _chunk(data, request_id, secret)
    except (AttributeError, TypeError, ValueError, KeyError) as e:
        error = _malformed("stream chunk", data, request_id, e)
        error.message = scrub_secret(error.message, secret)
        error.args = (error.message,)
        raise error from e


def _chunk(data: dict[str, Any], request_id: str | None, secret: str | None) -> ChatChunk:
    choices = data.get("choices")
    if not choices:
        if is_error_event(data):
            raise error_from_event(data, request_id=request_id, secret=secret)
        return ChatChunk(
            id=data.get("id"),
            model=data.get("model"),
            text=None,
            role=None,
            tool_calls=(),
            finish_reason=None,
            stop_reason=None,
            usage=_usage(data),
            raw=data,
        )
    choice = choices[0]
    delta = choice.get("delta") or {}
    raw_calls = delta.get("tool_calls")
    deltas: tuple[ToolCallDelta, ...] = ()
    if raw_calls:
        deltas = tuple(
            ToolCallDelta(
                index=int(call.get("index", i)),
                id=call.get("id"),
                name=(call.get("function") or {}).get("name"),
                arguments=(call.get("function") or {}).get("arguments"),
            )
            for i, call in enumerate(raw_calls)
        )
    usage = data.get("usage")
    content = delta.get("content")
    # Positional, in field order: this runs once per streamed token.
    return ChatChunk(
        data.get("id"),
        data.get("model"),
        content if content is None or type(content) is str else _reply_text(content),
        delta.get("role"),
        deltas,
        choice.get("finish_reason"),
        choice.get("stop_reason"),
        Usage.from_openai(usage) if isinstance(usage, Mapping) else None,
        data,
    )


class ToolCallAccumulator:
    """Merge streamed tool-call deltas: name and id are set once, arguments appended."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, list[str | None]] = {}

    def add(self, deltas: Iterable[ToolCallDelta]) -> None:
        """Fold in the deltas of one chunk."""
        for delta in deltas:
            call = self._calls.get(delta.index)
            if call is None:
                call = self._calls[delta.index] = [None, None, ""]
            if delta.id and not call[0]:
                call[0] = delta.id
            if delta.name and not call[1]:
                call[1] = delta.name
            if delta.arguments:
                call[2] = (call[2] or "") + delta.arguments

    def __bool__(self) -> bool:
        return bool(self._calls)

    def result(self) -> list[ToolCall]:
        """The calls so far, in index order; a call with no id gets `call_{index}`."""
        return [
            ToolCall(id=c[0] or f"call_{i}", name=c[1] or "", arguments=c[2] or "")
            for i, c in sorted(self._calls.items())
        ]
