"""Tools in the prompt (Llama 3.1's JSON tool-call format), as pure functions.

An endpoint whose vLLM runs without tool parsing answers `tools` with HTTP 400. There the tools
go into the prompt in Meta's JSON-based format for Llama 3.1, and the reply
`{"name": ..., "parameters": {...}}` is read back as a tool call ("prompt mode"). The same
reader also catches a call that a native endpoint left in the text. Streams are watched by
`tool_stream.TextToolCallFilter`; structured output's fallbacks are in `structured`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from .._errors import BadRequestError, ContextLengthExceededError, ServerError, TIRError
from .wire import ChatCompletion, ToolCall, message_text

__all__ = [
    "PYTHON_TAG",
    "ToolMode",
    "cut_calls",
    "forced_name",
    "is_tools_rejection",
    "parse_text_tool_calls",
    "read_text_calls",
    "rejection_text",
    "scan_objects",
    "strip_wrapping",
    "to_prompt_mode",
    "tool_names",
]

ToolMode = Literal["auto", "native", "prompt"]

PYTHON_TAG = "<|python_tag|>"

# Meta's wording for Llama 3.1 JSON-based tool calling (as in vLLM's llama3.1_json template).
DEFAULT_SYSTEM = (
    "You are a helpful assistant with tool calling capabilities. Only reply with a tool call if "
    "the function exists in the library provided by the user. If it doesn't exist, just reply "
    "directly in natural language. When you receive a tool call response, use the output to "
    "format an answer to the original user question."
)
TOOLS_PREAMBLE = (
    "Given the following functions, please respond with a JSON for a function call with its "
    "proper arguments that best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name '
    "and its value}. Do not use variables.\n\n"
)


def tool_names(tools: Sequence[Mapping[str, Any]] | None) -> frozenset[str]:
    """The function names of OpenAI-style tool specs."""
    return frozenset(
        t["function"]["name"] for t in tools or () if isinstance(t.get("function"), Mapping)
    )


def _render_call(call: Mapping[str, Any]) -> str:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        parameters = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        parameters = arguments
    return json.dumps({"name": function.get("name", ""), "parameters": parameters})


def _choice_instruction(tool_choice: Any) -> str:
    if tool_choice == "required":
        return "You must call one of these functions: reply with a function call only.\n\n"
    if isinstance(tool_choice, Mapping):
        name = (tool_choice.get("function") or {}).get("name")
        if name:
            return f'You must call the function "{name}": reply with that function call only.\n\n'
    return ""


def to_prompt_mode(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite a request with native `tools` into one that carries them in the prompt.

    The tool definitions (with Meta's instructions, and `tool_choice` as an instruction) go
    into the first user message; earlier assistant tool calls become the JSON text the model
    is asked to write; tool results become `{"output": ...}` tool messages. `tool_choice`
    `"none"` renders no tools.
    """
    body = {
        k: v for k, v in payload.items() if k not in ("tools", "tool_choice", "parallel_tool_calls")
    }
    tools = list(payload.get("tools") or ())
    choice = payload.get("tool_choice")
    messages: list[dict[str, Any]] = []
    for message in payload.get("messages", ()):
        message = dict(message)
        if message.get("role") == "assistant" and message.get("tool_calls"):
            calls = [_render_call(c) for c in message.pop("tool_calls")]
            text = message_text(message.get("content"))
            message["content"] = (text + "\n" if text else "") + "; ".join(calls)
        elif message.get("role") == "tool":
            message["content"] = json.dumps({"output": message_text(message.get("content"))})
        messages.append(message)
    if tools and choice != "none":
        definitions = "".join(json.dumps(t.get("function", t), indent=4) + "\n\n" for t in tools)
        preamble = TOOLS_PREAMBLE + definitions + _choice_instruction(choice)
        first_user = next((m for m in messages if m.get("role") == "user"), None)
        if first_user is None:
            messages.append({"role": "user", "content": preamble.rstrip()})
        else:
            first_user["content"] = preamble + message_text(first_user.get("content"))
        if not messages or messages[0].get("role") != "system":
            messages.insert(0, {"role": "system", "content": DEFAULT_SYSTEM})
    body["messages"] = messages
    return body


def strip_wrapping(text: str) -> str:
    text = text.strip()
    if text.startswith(PYTHON_TAG):
        text = text[len(PYTHON_TAG) :].strip()
    if text.startswith("```"):
        first_line, _, rest = text.partition("\n")
        text = rest if first_line.strip("`").strip().lower() in ("", "json") else text
        text = text.strip()
        if text.endswith("```"):
            text = text[:-3].strip()
    if text.endswith("<|eom_id|>"):
        text = text[: -len("<|eom_id|>")].strip()
    return text


def scan_objects(text: str) -> tuple[list[str], bool, bool]:
    """The complete top-level `{...}` objects of `text`, in order.

    Also says whether anything outside them is more than whitespace and `;` separators
    (then the text is not calls), and whether the text ends inside an unfinished object.
    """
    objects: list[str] = []
    depth, start, in_string, escaped, stray = 0, 0, False, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            stray = stray or depth == 0
        elif ch in "{[":
            if depth == 0:
                start = i
                stray = stray or ch == "["
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth < 0:
                return objects, True, False
            if depth == 0:
                objects.append(text[start : i + 1])
        elif depth == 0 and ch not in "; \t\r\n":
            stray = True
    return objects, stray, depth > 0


def new_call_id() -> str:
    """An id for a call the model wrote as text (the text has none)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_text_tool_calls(text: str, names: Collection[str] | None = None) -> list[ToolCall] | None:
    """Read a reply written in Llama 3.1's JSON tool-call format.

    Accepts `{"name": ..., "parameters": {...}}` (or `"arguments"`), several separated by
    `;`, with surrounding whitespace, a `<|python_tag|>` prefix or a code fence.

    Args:
        text: the whole reply.
        names: the tools offered; a call naming another function is not a call.

    Returns:
        The calls, with generated ids, or None when the text is not (only) calls.
    """
    body = strip_wrapping(text)
    if not body.startswith("{"):
        return None
    parts, stray, unfinished = scan_objects(body)
    if not parts or stray or unfinished:
        return None
    calls = []
    for part in parts:
        try:
            value = json.loads(part)
        except ValueError:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            return None
        if names is not None and value["name"] not in names:
            return None
        parameters = value.get("parameters", value.get("arguments", {}))
        if isinstance(parameters, str):
            try:
                parameters = json.loads(parameters) if parameters.strip() else {}
            except ValueError:
                return None
        if not isinstance(parameters, dict):
            return None
        calls.append(
            ToolCall(id=new_call_id(), name=value["name"], arguments=json.dumps(parameters))
        )
    return calls


def read_text_calls(
    completion: ChatCompletion, names: Collection[str], forced: str | None = None
) -> ChatCompletion:
    """A reply whose text is a tool call, as a reply with that tool call.

    `forced` (see `forced_name`) says the request forced a call: then a call that max_tokens
    cut is read too (`cut_calls`), and the reply keeps its finish_reason "length".
    """
    if completion.tool_calls or not completion.text:
        return completion
    calls = parse_text_tool_calls(completion.text, names)
    if calls:
        return replace(completion, text=None, tool_calls=tuple(calls), finish_reason="tool_calls")
    if forced is not None and completion.finish_reason == "length":
        calls = cut_calls(completion.text, names, forced)
        if calls:
            return replace(completion, text=None, tool_calls=tuple(calls))
    return completion


def forced_name(tool_choice: Any, names: Collection[str]) -> str | None:
    """The tool a `tool_choice` forces: its name, "" for "required" or "any", else None."""
    if tool_choice in ("required", "any"):
        return next(iter(names)) if len(names) == 1 else ""
    if isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        return name if isinstance(name, str) else ""
    return None


# The head of a call: `{"name": "...",` then maybe `"parameters":` (or `"arguments":`).
_CALL_HEAD = re.compile(
    r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,?\s*("(?:parameters|arguments)"\s*:\s*)?'
)

_CUT_NAME = re.compile(r'\{\s*(?:"(?:n(?:a(?:m(?:e)?)?)?)?)?(?:"\s*:\s*"([^"\\]*))?$')


def cut_calls(text: str, names: Collection[str], forced: str) -> list[ToolCall] | None:
    """The calls of a forced tool call's JSON that max_tokens cut, or None if it is not one.

    vLLM's guided decoding writes a forced call (`tool_choice` "required" or a named function)
    as JSON; cut by max_tokens, vLLM sends that JSON as the reply's text (finish_reason
    "length"), `{"name": ..., "parameters": {...}}, {"name": ...` for "required". Whole calls
    become calls; the cut one becomes a call whose `arguments` are the cut JSON, which is what
    OpenAI's API sends for a call cut by max_tokens: never the reply's text, and never a call
    with arguments that look complete.

    Args:
        text: the reply's text.
        names: the tools offered.
        forced: the forced tool's name, or "" when any tool may be called.
    """
    body = strip_wrapping(text).removeprefix("[").lstrip()
    if not body.startswith("{"):
        return None
    objects, _, _ = scan_objects(body)
    calls: list[ToolCall] = []
    end = 0
    for part in objects:
        found = parse_text_tool_calls(part, names)
        if not found:
            break
        calls.extend(found)
        end = body.index(part, end) + len(part)
    tail = body[end:].lstrip(" \t\r\n,;")
    head = _CALL_HEAD.match(tail)
    if head and head.group(1) in names:
        # No arguments written yet: the cut head itself, so that they never read as `{}`.
        arguments = tail[head.end() :].strip() if head.group(2) else ""
        calls.append(ToolCall(id=new_call_id(), name=head.group(1), arguments=arguments or tail))
    elif not calls and not head and tail.startswith("{"):
        # Cut before its name was whole: the tool the choice names, else the one tool the
        # cut name can be, else none ("").
        cut_name = _CUT_NAME.match(tail)
        prefix = (cut_name.group(1) if cut_name else None) or ""
        matches = [n for n in names if n.startswith(prefix)]
        name = forced or (matches[0] if len(matches) == 1 else "")
        calls.append(ToolCall(id=new_call_id(), name=name, arguments=tail))
    return calls or None


def rejection_text(error: TIRError) -> str | None:
    """The lower-cased message of an error that says "this request is not acceptable".

    A 400 or 422; or a 5xx that reports a validation error, as llama.cpp's server does.
    """
    if isinstance(error, ContextLengthExceededError):
        return None
    message = error.message.lower()
    if isinstance(error, BadRequestError) or (
        isinstance(error, ServerError) and "validation error" in message
    ):
        return message
    return None


def is_tools_rejection(error: TIRError) -> bool:
    """Whether the endpoint says it cannot take native `tools` (vLLM without tool parsing).

    Only messages about the endpoint's setup count: vLLM's `"auto" tool choice requires
    --enable-auto-tool-choice and --tool-call-parser to be set`, llama.cpp's `--jinja`. Any
    other 400 about tools is about the request (vLLM's "The tool specified in `tool_choice`
    does not match any of the specified `tools`", an older vLLM's `tool_choice = "required"
    is not supported!`): the caller's error, raised as it is, as the peers raise it.
    """
    message = rejection_text(error)
    return message is not None and (
        "enable-auto-tool-choice" in message
        or "tool-call-parser" in message
        or "--jinja" in message
        or '"auto" tool choice requires' in message
    )
