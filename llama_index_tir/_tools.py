"""Tool calling: LlamaIndex tools and `tool_choice` -> request fields, replies -> ToolSelections."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole, ToolCallBlock
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.llms.utils import parse_partial_json

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool


def _tool_choice(tool_choice: str | dict[str, Any] | None, tool_required: bool) -> Any:
    if isinstance(tool_choice, dict):
        return tool_choice
    if tool_choice in (None, "auto"):
        return "required" if tool_required else "auto"
    if tool_choice in ("required", "none"):
        return tool_choice
    return {"type": "function", "function": {"name": tool_choice}}


def _whole_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def prepare_chat_with_tools(
    tools: Sequence[BaseTool],
    user_msg: str | ChatMessage | None,
    chat_history: list[ChatMessage] | None,
    allow_parallel_tool_calls: bool,
    tool_required: bool,
    tool_choice: str | dict[str, Any] | None,
    strict: bool | None,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """`TIRLlamaLLM._prepare_chat_with_tools`, `strict` resolved against the field already."""
    specs = [tool.metadata.to_openai_tool(skip_length_check=True) for tool in tools]
    messages = list(chat_history or [])
    if isinstance(user_msg, str):
        user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
    if user_msg is not None:
        messages.append(user_msg)
    prepared: dict[str, Any] = {"messages": messages, **kwargs}
    if specs:
        prepared["tools"] = specs
        if tool_required and tool_choice is None and len(specs) == 1:
            # "Call the one tool" said by name: the same thing, and servers that cannot
            # force "required" (llama.cpp's answers HTTP 500) can force a named tool.
            tool_choice = specs[0]["function"]["name"]
        prepared["tool_choice"] = _tool_choice(tool_choice, tool_required)
        if strict is None:
            # A forced call: without strict, vLLM's guided decoding forces the tool's
            # name and lets the model write any JSON as its arguments (a small model
            # writes the schema itself, until max_tokens cuts it).
            strict = prepared["tool_choice"] not in ("auto", "none")
        if strict:
            for spec in specs:
                spec["function"]["strict"] = True
        # Llama 3.1's template takes one call per assistant turn.
        prepared["parallel_tool_calls"] = allow_parallel_tool_calls
    return prepared


def keep_first_call(response: ChatResponse) -> None:
    """Drop every tool call of the reply but the first (in place)."""
    calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
    if len(calls) > 1:
        response.message.blocks = [
            b for b in response.message.blocks if not isinstance(b, ToolCallBlock) or b is calls[0]
        ]
        legacy = response.message.additional_kwargs.get("tool_calls")
        if legacy:
            response.message.additional_kwargs["tool_calls"] = legacy[:1]


def tool_selections(
    response: ChatResponse, error_on_no_tool_call: bool, max_tokens: int | None
) -> list[ToolSelection]:
    """`TIRLlamaLLM.get_tool_calls_from_response` (see its docstring)."""
    calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
    if not calls:
        if error_on_no_tool_call:
            raise ValueError("Expected at least one tool call, but the reply has none.")
        return []
    cut = response.message.additional_kwargs.get("finish_reason") == "length"
    selections = []
    for call in calls:
        arguments: Any = call.tool_kwargs
        if cut and isinstance(arguments, str) and not _whole_json(arguments):
            # The reply is over and max_tokens cut this call: its partial arguments
            # would call the tool with what happened to fit.
            raise ValueError(
                f"max_tokens cut the call to {call.tool_name or 'a tool'} before its "
                f"arguments were complete (finish_reason 'length'): raise max_tokens "
                f"(it is {max_tokens})"
            )
        if isinstance(arguments, str):
            try:
                arguments = parse_partial_json(arguments) if arguments.strip() else {}
            except (ValueError, TypeError):
                arguments = {}
        selections.append(
            ToolSelection(
                tool_id=call.tool_call_id or "",
                tool_name=call.tool_name,
                tool_kwargs=arguments if isinstance(arguments, dict) else {},
            )
        )
    return selections
