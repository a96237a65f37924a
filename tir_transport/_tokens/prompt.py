"""Prompt counts as vLLM makes them: Llama's chat frame, rendered, then tokenized.

Prompt counts mirror what vLLM does for a chat request: render Meta's chat template for Llama 3.1
(`render_llama3_prompt`, the same text as the official Jinja template) and tokenize the whole text,
special tokens counted as one token each. The tokenizers are in `tokenizer`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .._chat.tools import ToolMode, to_prompt_mode, tool_names
from .._chat.wire import message_text
from .tokenizer import Tokenizer, tokenizer_for

__all__ = ["count_message_tokens", "render_llama3_prompt", "render_llama4_prompt"]

_LLAMA3_SYSTEM_HEADER = "<|start_header_id|>system<|end_header_id|>\n\n"
_LLAMA3_EOT = "<|eot_id|>"
# Meta's template, first user turn when tools are given (tools_in_user_message, its default).
# No space before "Do not use variables.": the template joins the strings as they are.
_LLAMA3_TOOLS_INSTRUCTION = (
    "Given the following functions, please respond with a JSON for a function call with its "
    "proper arguments that best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name '
    "and its value}.Do not use variables.\n\n"
)
DATE_STRING = "26 Jul 2024"  # the template's default; vLLM passes no other


def _header(role: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n"


def _json(value: Any, indent: int | None = None) -> str:
    # transformers' tojson, which vLLM's template rendering uses: json.dumps, no HTML escaping.
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _server_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    # vLLM passes tools to the template as its pydantic models dumped: every declared field,
    # None included, in declaration order, then the extra fields it allows.
    function = dict(tool.get("function") or {})
    dumped_function = {
        "name": function.pop("name", None),
        "description": function.pop("description", None),
        "parameters": function.pop("parameters", None),
        **function,
    }
    rest = {k: v for k, v in tool.items() if k not in ("type", "function")}
    return {"type": tool.get("type", "function"), "function": dumped_function, **rest}


def _arguments(raw: Any) -> Any:
    # vLLM turns the wire's JSON string into a dict before rendering (templates expect one).
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _content(message: Mapping[str, Any]) -> str:
    # vLLM hands this template a string: text parts joined by newlines.
    return message_text(message.get("content"))


def _split_system(
    messages: Sequence[Mapping[str, Any]],
) -> tuple[str, list[Mapping[str, Any]]]:
    """The leading system message's text (stripped; empty if none) and the other messages."""
    rest = list(messages)
    if rest and rest[0].get("role") == "system":
        return _content(rest[0]).strip(), rest[1:]
    return "", rest


def _llama3_turn(message: Mapping[str, Any]) -> str:
    """A message as the template writes it after the first turns (header to end of turn)."""
    role = str(message.get("role"))
    calls = message.get("tool_calls") if role == "assistant" else None
    if calls:
        # The template takes one call per turn (more: vLLM answers 400); several are
        # counted as one turn each, which is how a history can carry them.
        return "".join(
            _header("assistant")
            + '{"name": "'
            + str((call.get("function") or {}).get("name", ""))
            + '", "parameters": '
            + _json(_arguments((call.get("function") or {}).get("arguments")))
            + "}"
            + _LLAMA3_EOT
            for call in calls
        )
    if role in ("tool", "ipython"):
        # A string is "iterable" to Jinja, so the template writes tool results as JSON.
        return _header("ipython") + _json(_content(message)) + _LLAMA3_EOT
    return _header(role) + _content(message).strip() + _LLAMA3_EOT


def render_llama3_prompt(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text vLLM builds for Llama 3.1 Instruct from a chat request.

    The same text as Meta's chat template (tokenizer_config.json of Llama-3.1-8B-Instruct)
    renders from the messages as vLLM prepares them: tool-call arguments parsed into objects,
    content parts joined, tools as vLLM's models dumped.

    Args:
        messages: OpenAI-style message dicts, as sent on the wire.
        tools: OpenAI-style tool definitions, as sent on the wire.
        add_generation_prompt: end with the assistant header (vLLM's default).

    Returns:
        The prompt, special tokens as text.
    """
    parts = ["<|begin_of_text|>"]
    system, rest = _split_system(messages)
    parts.append(_LLAMA3_SYSTEM_HEADER)
    if tools is not None:
        parts.append("Environment: ipython\n")
    parts.append(f"Cutting Knowledge Date: December 2023\nToday Date: {DATE_STRING}\n\n")
    parts.append(system + _LLAMA3_EOT)
    if tools is not None:
        # The template refuses tools without a first message to carry them (vLLM: a 400);
        # counted here as if that message were empty, so that counting never fails.
        first = _content(rest[0]).strip() if rest else ""
        rest = rest[1:]
        parts.append(_header("user") + _LLAMA3_TOOLS_INSTRUCTION)
        parts.extend(_json(_server_tool(t), indent=4) + "\n\n" for t in tools)
        parts.append(first + _LLAMA3_EOT)
    parts.extend(_llama3_turn(message) for message in rest)
    if add_generation_prompt:
        parts.append(_header("assistant"))
    return "".join(parts)


def _llama4_turn(message: Mapping[str, Any]) -> str:
    """A message after the system turn, in Llama 4's chat frame."""
    role = str(message.get("role"))
    role = "ipython" if role == "tool" else role
    text = _content(message).strip()
    for call in message.get("tool_calls") or () if role == "assistant" else ():
        function = call.get("function") or {}
        text += _json(
            {
                "name": function.get("name", ""),
                "parameters": _arguments(function.get("arguments")),
            }
        )
    return f"<|header_start|>{role}<|header_end|>\n\n{text}<|eot|>"


def render_llama4_prompt(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """Llama 4's chat frame, as llama-models' chat_format writes it (close, not checked).

    Turns are `<|header_start|>role<|header_end|>` + two newlines + content + `<|eot|>`, with
    no default system preamble; tool definitions are counted as JSON in the system turn.
    """
    parts = ["<|begin_of_text|>"]
    system, rest = _split_system(messages)
    if tools:
        system = "".join(_json(_server_tool(t), indent=4) + "\n\n" for t in tools) + system
    if system:
        parts.append(f"<|header_start|>system<|header_end|>\n\n{system}<|eot|>")
    parts.extend(_llama4_turn(message) for message in rest)
    parts.append("<|header_start|>assistant<|header_end|>\n\n")
    return "".join(parts)


def count_message_tokens(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    tool_mode: ToolMode = "native",
    any_order: bool = False,
) -> int:
    """The prompt tokens a chat request takes: what vLLM reports as `prompt_tokens`.

    Exact for Llama 3.x models with the `[tokens]` extra (Meta's chat template, rendered as
    vLLM renders it, and Llama 3's tokenizer); Llama 4 models are counted with Llama 4's
    tokenizer in its chat frame. Without the extra, and for other models, each text counts
    one token per UTF-8 byte: never fewer than the exact count.

    Args:
        model: the model's API name.
        messages: OpenAI-style message dicts, as sent on the wire (an empty list counts the
            frame alone).
        tools: OpenAI-style tool definitions sent with the request, if any (an empty list
            counts as no tools: `build_payload` does not send one).
        tool_mode: `"prompt"` counts the request as prompt mode sends it (tools and calls
            rewritten into the messages); `"auto"` and `"native"` count native tools (an
            endpoint that `"auto"` has switched to prompt mode takes a few tokens more).
        any_order: count a bound instead, one that holds for these messages sent in any
            order, or any part of them: the frame once, and each message as the largest of
            the ways the template frames it where it may land (the system turn, the first
            user turn that carries the tools, a turn of its own). In the order given it is
            exact but for 5 tokens when the first message is a system message and 5 when
            tools are given (the first other message); `count(a + b)` is then at most
            `count(a) + count(b) - count([])` (equal outside prompt mode). This is what
            LangChain's `trim_messages` needs: it counts lists reversed.

    Returns:
        The number of prompt tokens.
    """
    tokenizer = tokenizer_for(model)
    # No tools and an empty list are one request: `build_payload` sends no `tools: []`.
    tool_list = list(tools) if tools else None
    if tool_mode == "prompt" and tool_list and tool_names(tool_list):
        if any_order:
            return _prompt_mode_bound(tokenizer, messages, tool_list)
        body = to_prompt_mode({"messages": list(messages), "tools": tool_list})
        messages, tool_list = body["messages"], None
    if any_order:
        return _bound(tokenizer, messages, tool_list)
    if tokenizer.family == "llama4":
        return tokenizer.count_prompt(render_llama4_prompt(messages, tool_list))
    return tokenizer.count_prompt(render_llama3_prompt(messages, tool_list))


# -- a count for any order ---------------------------------------------------------------------
#
# Every turn of the template but one begins with a header and ends with an end-of-turn token,
# and tiktoken splits the prompt at special tokens before its BPE: a turn's tokens do not
# depend on its neighbours. The exceptions are texts glued to the frame, and there the frame
# ends in a pre-token boundary: the system message after "Today Date: ...\n\n" and, with
# tools, the first other message after the last definition's "}\n\n" (both stripped, so they
# begin with no whitespace to join the newlines). So the prompt's count is the frame's count
# (rendered with those texts empty) plus each message's, and a message's count depends only
# on where it lands; taking its largest gives a sum that no order or subset exceeds.


def _bound(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    tools: list[Mapping[str, Any]] | None,
) -> int:
    llama4 = tokenizer.family == "llama4"
    render = render_llama4_prompt if llama4 else render_llama3_prompt
    turn = _llama4_turn if llama4 else _llama3_turn
    turns = [turn(message) for message in messages]
    # Each turn is bounded by special tokens, so the frame and the turns count as one text:
    # one call to the tokenizer instead of one per message.
    total = tokenizer.count_prompt(render([], tools) + "".join(turns))
    if tools is not None and not llama4:
        empty_result = tokenizer.count_prompt(_header("ipython") + _LLAMA3_EOT)
        for message, text in zip(messages, turns, strict=True):
            # Glued to the frame (Llama 3.1 with tools: the first message after the system
            # one, whatever its role), a message is its stripped text alone: fewer tokens
            # than its own turn for a text, but not always for a tool result (not written as
            # JSON there) or a tool call (its text there, its call lost).
            if message.get("role") in ("tool", "ipython"):
                # Its turn is the empty turn's tokens and its JSON's (the header ends in
                # "\n\n", the JSON begins with a quote: no token spans them).
                own = empty_result + tokenizer.count_prompt(_json(_content(message)))
            elif message.get("tool_calls"):
                own = tokenizer.count_prompt(text)
            else:
                continue
            glued = _content(message).strip()
            if glued:
                total += max(0, tokenizer.count_prompt(glued) - own)
    return total


def _prompt_mode_bound(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    tools: list[Mapping[str, Any]],
) -> int:
    # Prompt mode rewrites each call and result on its own, then puts the definitions in
    # front of the first user message (or in a user message of their own when there is
    # none) and adds its system message when the first is not one: counted here as the
    # largest of those, whichever message is first.
    rewritten = to_prompt_mode({"messages": list(messages)})["messages"]
    probe = to_prompt_mode({"messages": [{"role": "user", "content": ""}], "tools": tools})
    added_system, first_user = probe["messages"]
    preamble = str(first_user["content"])
    turn = _llama4_turn if tokenizer.family == "llama4" else _llama3_turn
    extra = tokenizer.count_prompt(turn({"role": "user", "content": preamble.rstrip()}))
    for message in rewritten:
        if message.get("role") == "user":
            text = _content(message)
            with_preamble = {"role": "user", "content": preamble + text}
            extra = max(
                extra,
                tokenizer.count_prompt(turn(with_preamble)) - tokenizer.count_prompt(turn(message)),
            )
    return _bound(tokenizer, rewritten, None) + tokenizer.count_prompt(turn(added_system)) + extra
