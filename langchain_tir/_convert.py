"""Shape conversion only: LangChain messages <-> wire dicts, typed replies -> LangChain messages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    InvalidToolCall,
    SystemMessage,
    ToolCall,
    ToolCallChunk,
    ToolMessage,
)
from langchain_core.messages.ai import InputTokenDetails, OutputTokenDetails, UsageMetadata

from tir_transport import ChatChunk, ChatCompletion, Usage
from tir_transport import ToolCall as WireToolCall
from tir_transport.adapter import UnsupportedContentError

PROVIDER = "tir"

# Content blocks the text-only model cannot take.
_MEDIA_BLOCKS = frozenset(
    {"image", "image_url", "audio", "input_audio", "file", "video", "document", "media"}
)
# A model's own output replayed in the history (its reasoning, a provider's echo of the
# `tool_calls` the message carries anyway): nothing the user said, left out as ChatOpenAI
# does. Any other block that is not text is an error, never dropped.
_REPLAYED_OUTPUT = frozenset(
    {
        "reasoning",
        "reasoning_content",
        "thinking",
        "redacted_thinking",
        "tool_use",
        "tool_call",
        "tool_call_chunk",
        "invalid_tool_call",
        "function_call",
        "server_tool_call",
        "server_tool_call_chunk",
        "server_tool_result",
    }
)


def _text(content: str | list[Any], role: str) -> str:
    """The text the model sees: parts joined by a newline, as vLLM joins text parts."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
            continue
        kind = block.get("type")
        if kind in ("text", "text-plain"):
            parts.append(str(block.get("text", "")))
        elif kind == "json":
            # A tool's structured result (LangChain's json block): the model reads it as JSON.
            parts.append(json.dumps(block.get("json"), ensure_ascii=False))
        elif kind in _MEDIA_BLOCKS:
            raise UnsupportedContentError(
                f"a {role} message has a {kind!r} content block, but the TIR Llama models are "
                "text-only: send text (for example a description or a transcript) instead."
            )
        elif kind not in _REPLAYED_OUTPUT:
            raise UnsupportedContentError(
                f"a {role} message has a {kind!r} content block, which ChatTIRLlama cannot "
                "send: give its content as text (a 'text' block) or as JSON (a 'json' block)."
            )
    return "\n".join(parts)


def _wire_tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.get("id") or "",
        "type": "function",
        "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
    }


def _wire_invalid_tool_call(call: InvalidToolCall) -> dict[str, Any]:
    # Sent as the model wrote it, as ChatOpenAI does: a tool result that answers it must
    # not be left without its call.
    return {
        "id": call.get("id") or "",
        "type": "function",
        "function": {"name": call.get("name") or "", "arguments": call.get("args") or ""},
    }


def message_to_wire(message: BaseMessage) -> dict[str, Any]:
    """Convert one LangChain message to an OpenAI-style message dict.

    Raises:
        UnsupportedContentError: the message carries images, audio or files.
        TypeError: a message type the chat API has no role for.
    """
    if isinstance(message, HumanMessage):
        wire: dict[str, Any] = {"role": "user", "content": _text(message.content, "user")}
    elif isinstance(message, AIMessage):
        wire = {"role": "assistant", "content": _text(message.content, "assistant")}
        if message.tool_calls or message.invalid_tool_calls:
            wire["tool_calls"] = [_wire_tool_call(c) for c in message.tool_calls] + [
                _wire_invalid_tool_call(c) for c in message.invalid_tool_calls
            ]
    elif isinstance(message, SystemMessage):
        wire = {"role": "system", "content": _text(message.content, "system")}
    elif isinstance(message, ToolMessage):
        content = message.content
        text = content if isinstance(content, str) else _text(content, "tool")
        wire = {"role": "tool", "content": text, "tool_call_id": message.tool_call_id}
    elif isinstance(message, ChatMessage):
        wire = {"role": message.role, "content": _text(message.content, message.role)}
    elif isinstance(message, FunctionMessage):
        wire = {"role": "tool", "content": _text(message.content, "tool"), "name": message.name}
    else:
        raise TypeError(f"ChatTIRLlama cannot send a {type(message).__name__}")
    if message.name and wire["role"] in ("user", "assistant", "system"):
        wire["name"] = message.name
    return wire


def messages_to_wire(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Convert a conversation; an empty one is an error (there is nothing to answer)."""
    if not messages:
        raise ValueError("ChatTIRLlama needs at least one message: the input is empty")
    return [message_to_wire(m) for m in messages]


def _details(raw: Any, key: str) -> dict[str, Any]:
    value = raw.get(key) if isinstance(raw, dict) else None
    return value if isinstance(value, dict) else {}


def usage_metadata(usage: Usage | None, raw: Any = None) -> UsageMetadata | None:
    """LangChain's usage shape, or None when the server sent none (never invented).

    `raw` is the reply's `usage` object: its `prompt_tokens_details.cached_tokens` (vLLM's
    prefix cache) and `completion_tokens_details` become the token details, as ChatOpenAI
    reads them.
    """
    if usage is None:
        return None
    prompt = _details(raw, "prompt_tokens_details")
    completion = _details(raw, "completion_tokens_details")
    inputs = {"audio": prompt.get("audio_tokens"), "cache_read": prompt.get("cached_tokens")}
    outputs = {
        "audio": completion.get("audio_tokens"),
        "reasoning": completion.get("reasoning_tokens"),
    }
    return UsageMetadata(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        input_token_details=InputTokenDetails(
            **{k: v for k, v in inputs.items() if isinstance(v, int)}  # type: ignore[typeddict-item]
        ),
        output_token_details=OutputTokenDetails(
            **{k: v for k, v in outputs.items() if isinstance(v, int)}  # type: ignore[typeddict-item]
        ),
    )


def response_metadata(
    model: str | None, finish_reason: str | None, stop_reason: str | int | None
) -> dict[str, Any]:
    """The metadata that one message, or one chunk of a stream, carries."""
    metadata: dict[str, Any] = {"model_provider": PROVIDER}
    if model:
        metadata["model_name"] = model
    if finish_reason:
        metadata["finish_reason"] = finish_reason
    if stop_reason is not None:
        metadata["stop_reason"] = stop_reason
    return metadata


def choice_logprobs(raw: dict[str, Any]) -> Any:
    """The first choice's `logprobs` of a reply or chunk (None when not asked for)."""
    choices = raw.get("choices")
    if not choices or not isinstance(choices[0], dict):
        return None
    return choices[0].get("logprobs")


def reply_metadata(completion: ChatCompletion) -> dict[str, Any]:
    """A whole reply's metadata, with what ChatOpenAI puts there.

    `token_usage` is the server's `usage` under OpenAI's names (`prompt_tokens`...), and
    `id`, `system_fingerprint` and `logprobs` are there too (None when the server sent none).
    """
    raw = completion.raw
    metadata: dict[str, Any] = {}
    if isinstance(raw.get("usage"), dict):
        metadata["token_usage"] = dict(raw["usage"])
    metadata.update(
        response_metadata(completion.model, completion.finish_reason, completion.stop_reason)
    )
    metadata["id"] = completion.id
    metadata["system_fingerprint"] = raw.get("system_fingerprint")
    metadata["logprobs"] = choice_logprobs(raw)
    return metadata


def _parse_tool_call(call: WireToolCall, cut: bool = False) -> ToolCall | InvalidToolCall:
    if not call.arguments.strip():
        return ToolCall(name=call.name, args={}, id=call.id, type="tool_call")
    try:
        args = json.loads(call.arguments)
    except ValueError as e:
        error = f"the arguments are not valid JSON: {e}"
        if cut:
            error = (
                "max_tokens cut the call before its arguments were complete: raise max_tokens"
                f" ({error})"
            )
    else:
        if isinstance(args, dict):
            return ToolCall(name=call.name, args=args, id=call.id, type="tool_call")
        error = f"the arguments are JSON but not an object: {type(args).__name__}"
    return InvalidToolCall(
        name=call.name, args=call.arguments, id=call.id, error=error, type="invalid_tool_call"
    )


def completion_to_message(completion: ChatCompletion) -> AIMessage:
    """Convert a whole reply; malformed tool-call JSON becomes `invalid_tool_calls`."""
    tool_calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    cut = completion.finish_reason == "length"
    for call in completion.tool_calls:
        parsed = _parse_tool_call(call, cut)
        if parsed.get("type") == "invalid_tool_call":
            invalid.append(parsed)  # type: ignore[arg-type]
        else:
            tool_calls.append(parsed)  # type: ignore[arg-type]
    return AIMessage(
        content=completion.text or "",
        tool_calls=tool_calls,
        invalid_tool_calls=invalid,
        usage_metadata=usage_metadata(completion.usage, completion.raw.get("usage")),
        response_metadata=reply_metadata(completion),
        id=completion.id,
    )


class StreamConverter:
    """Turns stream chunks into message chunks; shared by the sync and async paths.

    Content and tool-call pieces go out at once, with no metadata that would be concatenated
    when chunks are added up; model name, finish reason and usage are collected and sent once,
    on the chunk `last()` returns (marked `chunk_position="last"`).
    """

    __slots__ = (
        "fingerprint",
        "finish_reason",
        "id",
        "model",
        "raw_usage",
        "seen_calls",
        "stop_reason",
        "usage",
    )

    def __init__(self) -> None:
        self.id: str | None = None
        # Tool-call indices whose name and id went out: LangChain concatenates repeats
        # ("get_weatherget_weather"), and some servers (llama.cpp) repeat them in every delta.
        self.seen_calls: dict[int, tuple[bool, bool]] = {}
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.usage: Usage | None = None
        self.raw_usage: Any = None
        self.fingerprint: Any = None

    def convert(self, chunk: ChatChunk) -> AIMessageChunk | None:
        """The message chunk for `chunk`, or None when it carries no content."""
        if chunk.id and self.id is None:
            self.id = chunk.id
        if chunk.model:
            self.model = chunk.model
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
            self.stop_reason = chunk.stop_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
            self.raw_usage = chunk.raw.get("usage")
        if self.fingerprint is None:
            self.fingerprint = chunk.raw.get("system_fingerprint")
        if chunk.tool_calls:
            pieces = []
            for d in chunk.tool_calls:
                named, has_id = self.seen_calls.get(d.index, (False, False))
                name = None if named else d.name
                call_id = None if has_id else d.id
                self.seen_calls[d.index] = (named or bool(d.name), has_id or bool(d.id))
                pieces.append(
                    ToolCallChunk(
                        name=name,
                        args=d.arguments,
                        id=call_id,
                        index=d.index,
                        type="tool_call_chunk",
                    )
                )
            return AIMessageChunk(content=chunk.text or "", tool_call_chunks=pieces, id=self.id)
        if not chunk.text:
            return None
        logprobs = choice_logprobs(chunk.raw)
        if logprobs is not None:
            # Asked for: each piece carries its own; LangChain joins the lists as chunks add.
            return AIMessageChunk(
                content=chunk.text, id=self.id, response_metadata={"logprobs": logprobs}
            )
        # The hot path: nothing but the text (the last chunk carries the metadata).
        return AIMessageChunk(content=chunk.text, id=self.id)

    def last(self) -> AIMessageChunk:
        """The closing chunk: usage, model name and finish reason, once."""
        metadata = response_metadata(self.model, self.finish_reason, self.stop_reason)
        metadata["system_fingerprint"] = self.fingerprint
        return AIMessageChunk(
            content="",
            id=self.id,
            usage_metadata=usage_metadata(self.usage, self.raw_usage),
            response_metadata=metadata,
            chunk_position="last",
        )
