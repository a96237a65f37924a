"""The chat route (`/chat/completions`): vLLM's request checks and which reply a request gets.

A queued `Reply`, or what vLLM's constraints make of the request (a forced tool call, JSON for
a schema), or the recorded TIR reply; sent whole (`chat_reply`) or streamed (`chat_stream`).
`ToolEndpoint` scripts the three ways an endpoint treats tools, for parametrized tests.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, ClassVar

from tests.support.emulator.chat_reply import _count_prompt_tokens, _max_tokens
from tests.support.emulator.chat_stream import ChatStream
from tests.support.emulator.faults import Reply
from tests.support.emulator.wire import RecordedRequest, _dumps, _error_body

if TYPE_CHECKING:
    from tests.support.emulator.endpoint import Emulator

TOOLS_REJECTED = (
    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
)
# vLLM's request validation, whatever the tool parser: a caller's mistake, not the endpoint's.
TOOL_CHOICE_MISMATCH = (
    "1 validation error for ChatCompletionRequest\n  Value error, The tool specified in "
    "`tool_choice` does not match any of the specified `tools`"
)
# vLLM 0.32's checks of `tools` and `tool_choice` before the one above (protocol.py).
EMPTY_TOOLS = (
    "1 validation error for ChatCompletionRequest\n  Value error, `tools` must not be an empty "
    "array. Either provide at least one tool or omit the field entirely."
)
STREAM_OPTIONS_WITHOUT_STREAM = (
    "1 validation error for ChatCompletionRequest\n  Value error, Stream options can only be "
    "defined when `stream=True`."
)
TOOL_CHOICE_WITHOUT_TOOLS = (
    "1 validation error for ChatCompletionRequest\n  Value error, When using `tool_choice`, "
    "`tools` must be set."
)
# Content part types vLLM's chat API reads; any other is refused ("Unknown part type").
KNOWN_PART_TYPES = frozenset(
    {"text", "image_url", "input_audio", "audio_url", "video_url", "file", "refusal"}
)


def instance_of(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """The plainest value valid for a JSON schema: what guided decoding guarantees, no more.

    vLLM holds a reply to the schema of `response_format` or of a forced tool; the emulator
    does the same with fixed values, so tests see the wire shape, never a model's judgement.
    """
    defs = {**(defs or {}), **schema.get("$defs", {}), **schema.get("definitions", {})}
    if "$ref" in schema:
        return instance_of(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key, []) if o.get("type") != "null"]
        if options:
            return instance_of(options[0], defs)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {name: instance_of(sub, defs) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return []
    if kind == "integer":
        return max(0, int(schema.get("minimum", 0)))
    if kind == "number":
        return float(max(0, schema.get("minimum", 0)))
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "emulated"


class ChatRoute(ChatStream):
    """The chat route: checks, the reply to send, and sending it whole or streamed."""

    async def _chat(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        """vLLM's /v1/chat/completions, once the checks every POST passes are behind it."""
        try:
            payload = json.loads(request.body)
        except ValueError:
            await self._send(writer, 400, _dumps(_error_body("nested", "bad JSON", 400)).encode())
            return True
        # An endpoint-level rejection comes first, so a scripted reply waits for the retry.
        rejection = self._endpoint_rejection(payload)
        if rejection is not None:
            await self._send(writer, 400, _dumps(rejection).encode())
            return True
        reply = self._queue.popleft() if self._queue else self._default_reply(payload)
        await self._hold(reply)
        if reply.status >= 400 or reply.body is not None:
            body = reply.body
            if body is None:
                body = _error_body(reply.error_format, reply.message, reply.status)
            raw = (
                body
                if isinstance(body, bytes)
                else (body.encode() if isinstance(body, str) else _dumps(body).encode())
            )
            ctype = "application/json" if not isinstance(body, str | bytes) else "text/plain"
            await self._send(writer, reply.status, raw, ctype, reply.headers)
            return True
        if payload.get("stream"):
            return await self._stream(payload, reply, writer)
        if reply.stall_after is not None:
            # A non-streamed reply that never comes.
            await asyncio.sleep(reply.stall_seconds)
            writer.transport.abort()
            return False
        if reply.delay or self.chat_delay:
            await asyncio.sleep(reply.delay or self.chat_delay)
        await self._send(writer, 200, _dumps(self._completion(payload, reply)).encode())
        return True

    def _default_reply(self, payload: dict[str, Any]) -> Reply:
        """What vLLM's constraints make of the request; otherwise the recorded reply."""
        tools = payload.get("tools") or []
        choice = payload.get("tool_choice")
        if tools and (choice == "required" or isinstance(choice, dict)):
            wanted = choice["function"]["name"] if isinstance(choice, dict) else None
            tool = next((t for t in tools if wanted in (None, t["function"]["name"])), tools[0])
            function = tool["function"]
            arguments = instance_of(function.get("parameters") or {"type": "object"})
            call = {"name": function["name"], "arguments": _dumps(arguments)}
            # vLLM: "tool_calls" for required, "stop" for a named function.
            return Reply(tool_calls=[call], finish_reason="stop" if wanted else None)
        messages = payload.get("messages") or [{}]
        last = messages[-1]
        if self.answer_from_tool_results and last.get("role") in ("tool", "ipython"):
            return Reply(text=f"The tool says: {last.get('content')}")
        response_format = payload.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = response_format.get("json_schema", {}).get("schema", {})
            return Reply(text=_dumps(instance_of(schema)))
        if isinstance(payload.get("guided_json"), dict):
            return Reply(text=_dumps(instance_of(payload["guided_json"])))
        if response_format.get("type") == "json_object":
            return Reply(text="{}")
        return Reply()

    def _endpoint_rejection(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        # vLLM validates the request before it looks at what the endpoint supports.
        for message in payload.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            for part in content if isinstance(content, list) else []:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind not in KNOWN_PART_TYPES:
                    return _error_body(self.error_format, f"Unknown part type: {kind}", 400)
        if payload.get("stream_options") and not payload.get("stream"):
            return _error_body(self.error_format, STREAM_OPTIONS_WITHOUT_STREAM, 400)
        choice = payload.get("tool_choice")
        if payload.get("tools") == []:
            return _error_body(self.error_format, EMPTY_TOOLS, 400)
        if choice not in (None, "none") and payload.get("tools") is None:
            return _error_body(self.error_format, TOOL_CHOICE_WITHOUT_TOOLS, 400)
        if isinstance(choice, dict) and payload.get("tools"):
            wanted = (choice.get("function") or {}).get("name")
            names = {(t.get("function") or {}).get("name") for t in payload["tools"]}
            if wanted not in names:
                return _error_body(self.error_format, TOOL_CHOICE_MISMATCH, 400)
        if self.reject_tools and payload.get("tools"):
            return _error_body(self.error_format, TOOLS_REJECTED, 400)
        kind = (payload.get("response_format") or {}).get("type")
        if (self.reject_response_format and kind == "json_schema") or (
            self.reject_json_object and kind == "json_object"
        ):
            return _error_body(
                "flat", f"response_format type '{kind}' is not supported by this server", 400
            )
        if self.reject_guided_json and "guided_json" in payload:
            return _error_body(
                "flat",
                "1 validation error for ChatCompletionRequest\nguided_json\n  Extra inputs are "
                "not permitted",
                400,
            )
        if self.max_context is not None:
            wanted = _count_prompt_tokens(payload) + int(_max_tokens(payload) or 0)
            if wanted > self.max_context:
                message = (
                    f"This model's maximum context length is {self.max_context} tokens. "
                    f"However, you requested {wanted} tokens "
                    f"({_count_prompt_tokens(payload)} in the messages, "
                    f"{payload.get('max_tokens')} in the completion). "
                    "Please reduce the length of the messages or completion."
                )
                return _error_body(self.error_format, message, 400)
        return None


class ToolEndpoint:
    """One of the three ways an endpoint can treat tools, for parametrized adapter tests."""

    KINDS = ("native", "rejected", "text-in-native")
    # Arguments beyond ASCII: Devanagari, accents, CJK and an emoji (outside the BMP: a
    # surrogate pair when \u-escaped), cut anywhere by the 7- and 9-character stream pieces.
    NON_ASCII: ClassVar[dict[str, str]] = {"city": "पुणे", "note": "São Paulo, 東京 🌧"}

    def __init__(self, emulator: Emulator, kind: str) -> None:
        self.emulator = emulator
        self.kind = kind
        emulator.reject_tools = kind == "rejected"

    def call(self, name: str, arguments: dict[str, Any], call_id: str = "call-1") -> Reply:
        """The reply in which the model calls `name`, as this kind of endpoint sends it."""
        if self.kind == "native":
            return Reply(tool_calls=[{"id": call_id, "name": name, "arguments": _dumps(arguments)}])
        # The characters themselves, as a model writes them (not \u escapes).
        text = json.dumps({"name": name, "parameters": arguments}, ensure_ascii=False)
        # Streamed in pieces, as a model writes it.
        return Reply(pieces=[text[i : i + 9] for i in range(0, len(text), 9)])

    def tools_were_native(self) -> bool:
        """Whether the last request carried `tools` (prompt mode carries none)."""
        return "tools" in self.emulator.requests[-1].json
