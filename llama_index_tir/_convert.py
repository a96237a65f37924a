"""Shape conversion only: LlamaIndex messages <-> wire dicts, typed replies -> ChatResponses."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    LogProb,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)

from tir_transport import ChatChunk, ChatCompletion, ToolCall, Usage
from tir_transport.adapter import ToolCallAccumulator, UnsupportedContentError

# Blocks a text-only model cannot take; other non-text blocks (thinking, cache points,
# citations) carry nothing the server reads and are left out.
_MEDIA_BLOCKS = frozenset({"image", "audio", "video", "document"})
# Blocks with nothing for the model to read, left out as OpenAI's LlamaIndex class leaves out
# a thinking block: a past reply's reasoning (the chat API takes none back), a prompt-cache
# mark (vLLM caches prefixes by itself).
_NOT_SENT = frozenset({"thinking", "cache"})


def _role(role: MessageRole) -> str:
    if role in (MessageRole.CHATBOT, MessageRole.MODEL):
        return "assistant"
    if role is MessageRole.DEVELOPER:
        return "system"
    if role is MessageRole.FUNCTION:
        return "tool"
    return str(role.value)


def _call_dict(call_id: str | None, name: str, arguments: Any, index: int) -> dict[str, Any]:
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {
        "id": call_id or f"call_{index}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _legacy_tool_calls(raw: Any) -> list[dict[str, Any]]:
    """Tool calls kept in `additional_kwargs["tool_calls"]` by older integrations."""
    calls = []
    for i, call in enumerate(raw or []):
        data = call if isinstance(call, dict) else call.model_dump()
        function = data.get("function") or {}
        calls.append(
            _call_dict(data.get("id"), function.get("name", ""), function.get("arguments", "{}"), i)
        )
    return calls


def message_to_wire(message: ChatMessage) -> dict[str, Any]:
    """Convert one LlamaIndex message to an OpenAI-style message dict.

    Text, citable and citation blocks are sent as text (newline-joined, as vLLM joins text
    parts); thinking and cache blocks are left out.

    Raises:
        UnsupportedContentError: the message carries images, audio, video or documents, or
            a block of a kind this does not know.
    """
    role = _role(message.role)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.blocks:
        if isinstance(block, ToolCallBlock):
            calls.append(
                _call_dict(block.tool_call_id, block.tool_name, block.tool_kwargs, len(calls))
            )
        elif block.block_type not in _NOT_SENT:
            texts += _block_text(block, role)
    wire: dict[str, Any] = {"role": role, "content": "\n".join(texts)}
    if role == "assistant":
        calls = calls or _legacy_tool_calls(message.additional_kwargs.get("tool_calls"))
        if calls:
            wire["tool_calls"] = calls
    elif role == "tool":
        call_id = message.additional_kwargs.get("tool_call_id")
        if call_id:
            wire["tool_call_id"] = call_id
    name = message.additional_kwargs.get("name")
    if name and role in ("user", "assistant", "system"):
        wire["name"] = name
    return wire


def _block_text(block: Any, role: str) -> list[str]:
    """The text a block gives the model; a block that has none to give is an error.

    A tool may return a `CitableBlock` (its content and where it comes from) and a reply may
    quote one with a `CitationBlock`: their text is what the model must read, and dropping
    it would answer without the tool's data.
    """
    kind = block.block_type
    if kind == "text":
        return [block.text]
    if kind == "citable":
        return [text for part in block.content for text in _block_text(part, role)]
    if kind == "citation":
        return _block_text(block.cited_content, role)
    if kind in _MEDIA_BLOCKS:
        raise UnsupportedContentError(
            f"a {role} message has a {kind!r} block, but the TIR Llama models "
            "are text-only: send text (for example a description or a transcript) instead."
        )
    raise UnsupportedContentError(
        f"a {role} message has a {kind!r} block, which TIRLlamaLLM cannot send: give its "
        "content as text (a TextBlock) instead."
    )


def messages_to_wire(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Convert a conversation; an empty one is an error (there is nothing to answer)."""
    if not messages:
        raise ValueError("TIRLlamaLLM needs at least one message: the input is empty")
    return [message_to_wire(m) for m in messages]


def token_counts(usage: Usage | None) -> dict[str, int]:
    """LlamaIndex's `additional_kwargs` token counts; empty when the server sent none."""
    if usage is None:
        return {}
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def _assistant(text: str, calls: Sequence[ToolCall]) -> ChatMessage:
    blocks: list[Any] = [TextBlock(text=text)]
    blocks += [
        ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.arguments) for c in calls
    ]
    additional: dict[str, Any] = {}
    if calls:
        # Kept for code written against older integrations that read them here.
        additional["tool_calls"] = [
            _call_dict(c.id, c.name, c.arguments, i) for i, c in enumerate(calls)
        ]
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=additional)


# The fields of openai's ChatCompletion and ChatCompletionChunk models and everything inside
# them (choices, messages, deltas, tool calls, usage and its details, logprobs): one the reply
# lacks reads as None, as an unset field of openai's model does. Any other missing name is an
# AttributeError, so `hasattr` and a misspelt field tell the truth.
_OPENAI_FIELDS = frozenset(
    {
        "accepted_prediction_tokens", "annotations", "arguments", "audio", "audio_tokens",
        "bytes", "cache_write_tokens", "cached_tokens", "choices", "code", "completion_tokens",
        "completion_tokens_details", "content", "created", "data", "delta", "end_index",
        "expires_at", "finish_reason", "function", "function_call", "id", "index", "logprob",
        "logprobs", "message", "model", "name", "object", "prompt_tokens",
        "prompt_tokens_details", "reasoning_tokens", "refusal", "role", "service_tier",
        "start_index", "system_fingerprint", "title", "token", "tool_calls", "top_logprobs",
        "total_tokens", "transcript", "type", "url", "url_citation", "usage",
    }
)  # fmt: skip


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


class RawReply(dict[str, Any]):
    """The reply's JSON, readable as a dict and, as OpenAILike's `raw`, by attribute.

    `r.raw["usage"]["prompt_tokens"]` and `r.raw.usage.prompt_tokens` (code written for
    OpenAILike, whose `raw` is openai's `ChatCompletion`) both work; an OpenAI field the reply
    lacks is None by attribute, as an unset field of openai's model is, and any other name
    the reply lacks is an AttributeError. `model_dump`, `model_dump_json`, `to_dict` and
    `to_json` give the JSON as openai's models do.
    """

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return _wrap(self[name])
        if name in _OPENAI_FIELDS:
            return None
        raise AttributeError(f"{type(self).__name__} (the reply's JSON) has no field {name!r}")

    def model_dump(
        self,
        *,
        mode: str = "python",
        include: Any = None,
        exclude: Any = None,
        by_alias: bool | None = None,
        exclude_unset: bool = False,
        exclude_defaults: bool = False,
        exclude_none: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        """The plain JSON, as openai's models give it.

        Args:
            mode: `"python"` or `"json"`; the same here (the reply is JSON already).
            include: top-level fields to keep (a set, or a dict whose keys are kept).
            exclude: top-level fields to leave out.
            by_alias: accepted; the JSON's names are the API's.
            exclude_unset: accepted; only what the server sent is here.
            exclude_defaults: accepted, as `exclude_unset`.
            exclude_none: leave out fields (at any depth) whose value is None.
            **options: pydantic's other options (`round_trip`, `warnings`...), accepted.
        """
        data: dict[str, Any] = json.loads(json.dumps(self))
        if include is not None:
            data = {k: v for k, v in data.items() if k in include}
        if exclude is not None:
            data = {k: v for k, v in data.items() if k not in exclude}
        return _without_none(data) if exclude_none else data

    def model_dump_json(
        self, *, indent: int | None = None, exclude_none: bool = False, **options: Any
    ) -> str:
        """The JSON as a string (compact unless `indent`), as openai's models give it."""
        data = self.model_dump(exclude_none=exclude_none, **options)
        separators = (",", ":") if indent is None else None
        return json.dumps(data, indent=indent, separators=separators, ensure_ascii=False)

    def to_dict(self, *, exclude_none: bool = False, **options: Any) -> dict[str, Any]:
        """The plain JSON, as openai's `to_dict()` gives it."""
        return self.model_dump(exclude_none=exclude_none, **options)

    def to_json(self, *, indent: int | None = 2, exclude_none: bool = False, **options: Any) -> str:
        """The JSON as a string, indented by 2 by default, as openai's `to_json()` gives it."""
        return self.model_dump_json(indent=indent, exclude_none=exclude_none, **options)


def _wrap(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, RawReply):
        return RawReply(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def logprobs(raw: dict[str, Any]) -> list[list[LogProb]] | None:
    """`ChatResponse.logprobs` from a reply's first choice, as OpenAILike reads them.

    One list per token: its top alternatives (`top_logprobs`). None when not asked for.
    """
    choices = raw.get("choices")
    if not choices or not isinstance(choices[0], dict):
        return None
    content = (choices[0].get("logprobs") or {}).get("content")
    if not content:
        return None
    tokens = [
        [
            LogProb(token=top["token"], logprob=top["logprob"], bytes=top.get("bytes") or [])
            for top in token.get("top_logprobs") or ()
        ]
        for token in content
    ]
    return [t for t in tokens if t]


def completion_to_response(completion: ChatCompletion) -> ChatResponse:
    """Convert a whole reply; `raw` is the parsed JSON, usage is in `additional_kwargs`."""
    message = _assistant(completion.text or "", completion.tool_calls)
    if completion.finish_reason:
        message.additional_kwargs["finish_reason"] = completion.finish_reason
    return ChatResponse(
        message=message,
        raw=RawReply(completion.raw),
        logprobs=logprobs(completion.raw),
        additional_kwargs=token_counts(completion.usage),
    )


class StreamConverter:
    """Turns stream chunks into cumulative ChatResponses; shared by sync and async paths."""

    __slots__ = ("_calls", "_finish", "_text")

    def __init__(self) -> None:
        self._text = ""
        self._calls = ToolCallAccumulator()
        self._finish: str | None = None

    def convert(self, chunk: ChatChunk) -> ChatResponse | None:
        """The response for `chunk`, or None when it carries nothing (the role-only chunk)."""
        delta = chunk.text or ""
        # LlamaIndex's contract: every response carries the whole message so far.
        self._text += delta
        if chunk.tool_calls:
            self._calls.add(chunk.tool_calls)
        if not chunk.tool_calls and chunk.usage is None and not chunk.finish_reason:
            if not delta:
                return None
            if not self._calls:
                # The hot path, once per token: the text so far and nothing else.
                return ChatResponse(
                    message=ChatMessage(
                        role=MessageRole.ASSISTANT, blocks=[TextBlock(text=self._text)]
                    ),
                    delta=delta,
                    raw=RawReply(chunk.raw),
                )
        message = _assistant(self._text, self._calls.result() if self._calls else ())
        if chunk.finish_reason:
            self._finish = chunk.finish_reason
            message.additional_kwargs["finish_reason"] = chunk.finish_reason
        raw = RawReply(chunk.raw)
        if not raw.get("choices"):
            # vLLM's usage chunk has `"choices": []`; OpenAILike's last response holds a choice
            # (it asks for no usage), and code written for it reads `raw.choices[0].delta`:
            # an empty delta with the finish reason, as the finish chunk had.
            raw["choices"] = [{"index": 0, "delta": {"content": ""}, "finish_reason": self._finish}]
        return ChatResponse(
            message=message,
            delta=delta,
            raw=raw,
            additional_kwargs=token_counts(chunk.usage),
        )
