"""The pure parts of prompt-mode tools and structured-output fallbacks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tir_transport import ChatChunk
from tir_transport._chat.structured import (
    SchemaInstruction,
    is_guided_json_rejection,
    is_response_format_rejection,
)
from tir_transport._chat.tool_stream import TextToolCallFilter
from tir_transport._chat.tools import (
    DEFAULT_SYSTEM,
    cut_calls,
    forced_name,
    is_tools_rejection,
    parse_text_tool_calls,
    to_prompt_mode,
)
from tir_transport._errors import BadRequestError, ContextLengthExceededError, ServerError
from tir_transport._retry import is_retryable

NAMES = {"get_weather", "search"}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def calls(text: str, names: Any = NAMES) -> list[tuple[str, dict[str, Any]]] | None:
    parsed = parse_text_tool_calls(text, names)
    if parsed is None:
        return None
    assert all(c.id.startswith("call_") and len(c.id) > 10 for c in parsed)
    return [(c.name, json.loads(c.arguments)) for c in parsed]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '  \n{"name": "get_weather", "parameters": {"city": "Paris"}}\n ',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|eom_id|>',
        '```json\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n```',
        '```\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
    ],
)
def test_one_call_in_every_wrapping(text: str) -> None:
    assert calls(text) == [("get_weather", {"city": "Paris"})]


def test_several_calls_separated_by_semicolons() -> None:
    text = (
        '{"name": "get_weather", "parameters": {"city": "a;b"}}; '
        '{"name": "search", "parameters": {}}'
    )
    assert calls(text) == [("get_weather", {"city": "a;b"}), ("search", {})]
    first, second = parse_text_tool_calls(text, NAMES) or []
    assert first.id != second.id


@pytest.mark.parametrize(
    "text",
    [
        "The weather is sunny.",
        '{"name": "unknown_tool", "parameters": {}}',
        '{"name": "get_weather", "parameters": {"city": "Par',
        '{"name": "get_weather", "parameters": [1, 2]}',
        '{"setup": "Why?", "punchline": "Because."}',
        '{"name": "get_weather", "parameters": {}} and some prose',
        "",
    ],
)
def test_not_calls(text: str) -> None:
    assert calls(text) is None


def test_without_a_tool_list_any_name_is_a_call() -> None:
    assert calls('{"name": "x", "parameters": {}}', None) == [("x", {})]


# -- the request in prompt mode -------------------------------------------------------------


def test_prompt_mode_request() -> None:
    payload: dict[str, Any] = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        ],
        "tools": [TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "temperature": 0,
    }
    body = to_prompt_mode(payload)
    assert "tools" not in body and "tool_choice" not in body and "parallel_tool_calls" not in body
    assert body["temperature"] == 0
    system, first, assistant, tool = body["messages"]
    assert system == {"role": "system", "content": DEFAULT_SYSTEM}
    assert first["role"] == "user"
    assert first["content"].startswith("Given the following functions")
    assert '"name": "get_weather"' in first["content"]
    assert first["content"].endswith("Weather in Paris?")
    assert assistant == {
        "role": "assistant",
        "content": '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    }
    assert tool == {"role": "tool", "content": '{"output": "sunny"}', "tool_call_id": "c1"}
    # The caller's payload is untouched.
    assert payload["messages"][1]["tool_calls"]
    assert payload["messages"][0]["content"] == "Weather in Paris?"


def test_prompt_mode_keeps_a_system_message_and_honours_tool_choice() -> None:
    base = {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}],
        "tools": [TOOL],
    }
    required = to_prompt_mode({**base, "tool_choice": "required"})
    assert required["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "You must call one of these functions" in required["messages"][1]["content"]
    named = to_prompt_mode(
        {**base, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    )
    assert 'You must call the function "get_weather"' in named["messages"][1]["content"]
    none = to_prompt_mode({**base, "tool_choice": "none"})
    assert none["messages"] == base["messages"]


# -- streaming: hold back only while the reply may be a call -------------------------------


def chunk(text: str | None = None, finish: str | None = None, **kw: Any) -> ChatChunk:
    return ChatChunk(
        id="x",
        model="m",
        text=text,
        role=kw.get("role"),
        tool_calls=kw.get("tool_calls", ()),
        finish_reason=finish,
        stop_reason=None,
        usage=None,
        raw={},
    )


def run(
    pieces: list[str], forced: str | None = None, finish: str = "stop"
) -> list[ChatChunk | None]:
    watch = TextToolCallFilter(NAMES, forced)
    out = [watch.process(chunk(role="assistant"))]
    out += [watch.process(chunk(p)) for p in pieces]
    out.append(watch.process(chunk("", finish=finish)))
    return out


def test_plain_text_is_released_at_once() -> None:
    out = run(["The", " weather", " is", " sunny."])
    texts = [c.text if c else None for c in out]
    assert texts == [None, "The", " weather", " is", " sunny.", ""]
    assert out[-1] is not None and out[-1].finish_reason == "stop"


def test_leading_whitespace_is_held_only_until_the_first_word() -> None:
    out = run([" ", "\n", "Hi", " there"])
    assert [c.text if c else None for c in out[1:-1]] == [None, None, " \nHi", " there"]


def test_a_call_is_held_and_becomes_tool_call_deltas() -> None:
    pieces = ['{"name": "get_', 'weather", "param', 'eters": {"city": "Paris"}}']
    out = run(pieces)
    assert out[1:-1] == [None, None, None]
    last = out[-1]
    assert last is not None
    assert last.finish_reason == "tool_calls"
    assert last.text is None
    (delta,) = last.tool_calls
    assert (delta.index, delta.name, json.loads(delta.arguments or "")) == (
        0,
        "get_weather",
        {"city": "Paris"},
    )
    assert delta.id and delta.id.startswith("call_")


def test_json_that_is_not_a_call_is_released_when_its_object_closes() -> None:
    out = run(['{"setup": "Why?",', ' "punchline": "Because."}', " More text."])
    assert out[1] is None
    released = out[2]
    assert released is not None and released.text == '{"setup": "Why?", "punchline": "Because."}'
    assert out[3] is not None and out[3].text == " More text."


def test_python_tag_prefix_is_held() -> None:
    out = run(["<|python", "_tag|>", '{"name": "search", "parameters": {}}'])
    assert out[1:-1] == [None, None, None]
    assert out[-1] is not None and out[-1].tool_calls[0].name == "search"


def test_held_text_that_is_no_call_after_all_comes_out_at_the_end() -> None:
    out = run(['{"name": "get_weather", "parameters": {"city": "Par'])
    assert out[-1] is not None
    assert out[-1].text == '{"name": "get_weather", "parameters": {"city": "Par'
    assert out[-1].finish_reason == "stop"


def test_native_call_deltas_pass_through() -> None:
    from tir_transport import ToolCallDelta

    watch = TextToolCallFilter(NAMES)
    native = chunk(tool_calls=(ToolCallDelta(0, "c", "search", "{}"),))
    assert watch.process(native) is native
    assert watch.process(chunk("text")) is not None


# -- what counts as a rejection ------------------------------------------------------------


def test_rejections() -> None:
    tools_400 = BadRequestError(
        '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
        status_code=400,
    )
    assert is_tools_rejection(tools_400)
    assert not is_response_format_rejection(tools_400)
    # About one request, not the endpoint's setup: the caller's error.
    old_vllm = BadRequestError('tool_choice = "required" is not supported!', status_code=400)
    assert not is_tools_rejection(old_vllm)
    rf_400 = BadRequestError("response_format type 'json_schema' is not supported", status_code=400)
    assert is_response_format_rejection(rf_400)
    llama_cpp_500 = ServerError(
        "1 validation error: {'loc': ('body', 'response_format', 'type'), 'msg': \"Input should "
        "be 'text' or 'json_object'\"}",
        status_code=500,
    )
    assert is_response_format_rejection(llama_cpp_500)
    assert not is_retryable(llama_cpp_500)
    assert is_retryable(ServerError("boom", status_code=500))
    assert not is_response_format_rejection(ServerError("response_format crashed", status_code=500))
    guided = BadRequestError("guided_json\n  Extra inputs are not permitted", status_code=400)
    assert is_guided_json_rejection(guided)
    overflow = ContextLengthExceededError("maximum context length; tool_choice", status_code=400)
    assert not is_tools_rejection(overflow)


# -- the instruction fallback for JSON schemas ---------------------------------------------


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "country": {"type": "string"}},
    "required": ["name", "country"],
}


def test_schema_instruction() -> None:
    instruction = SchemaInstruction(SCHEMA)
    body = instruction.apply(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "a city"}],
            "response_format": {"type": "json_schema"},
            "guided_json": SCHEMA,
        }
    )
    assert "guided_json" not in body
    assert body["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert "response_format" not in SchemaInstruction(SCHEMA, json_object=False).apply(body)
    assert body["messages"][0]["role"] == "system"
    assert json.dumps(SCHEMA) in body["messages"][0]["content"]
    assert instruction.problem('{"name": "Pune", "country": "India"}') is None
    assert instruction.problem('```json\n{"name": "Pune", "country": "India"}\n```') is None
    assert "not JSON" in (instruction.problem("Pune, India") or "")
    assert "['country']" in (instruction.problem('{"name": "Pune"}') or "")
    assert "not a JSON object" in (instruction.problem("[1]") or "")
    repair = instruction.repair(body, "Pune", "it is not JSON")
    assert repair["messages"][-2] == {"role": "assistant", "content": "Pune"}
    assert "it is not JSON" in repair["messages"][-1]["content"]


def test_fenced_code_is_released_as_soon_as_its_tag_is_not_json() -> None:
    out = run(["``", "`py", "thon\n", "print(1)\n", "```"])
    assert out[1] is None  # "``" could still open a ```json fence
    released = out[2]
    assert released is not None and released.text == "```py"
    assert [c.text if c else None for c in out[3:5]] == ["thon\n", "print(1)\n"]


def test_bare_fence_is_decided_by_what_follows() -> None:
    out = run(["```\n", "SELECT 1;\n", "```"])
    assert out[1] is None
    assert out[2] is not None and out[2].text == "```\nSELECT 1;\n"


def test_fenced_call_is_held_and_read() -> None:
    out = run(["```json\n", '{"name": "search", ', '"parameters": {}}\n', "```"])
    assert out[1:-1] == [None, None, None, None]
    assert out[-1] is not None and out[-1].tool_calls[0].name == "search"


def test_python_tag_followed_by_code_is_released() -> None:
    out = run(["<|python_tag|>", "print('hi')"])
    assert out[1] is None
    assert out[2] is not None and out[2].text == "<|python_tag|>print('hi')"


# -- a forced call that max_tokens cut (vLLM sends it as text, finish_reason "length") ----------


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("required", ""),
        ("any", ""),
        ({"type": "function", "function": {"name": "search"}}, "search"),
        ("auto", None),
        ("none", None),
        (None, None),
    ],
)
def test_forced_name(choice: Any, expected: str | None) -> None:
    assert forced_name(choice, NAMES) == expected
    # With one tool, "required" can only mean it.
    assert forced_name("required", {"search"}) == "search"


def cut(text: str, forced: str = "") -> list[tuple[str, str]] | None:
    found = cut_calls(text, NAMES, forced)
    return None if found is None else [(c.name, c.arguments) for c in found]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # As vLLM 0.32 sent them (../shared/vllm.md): a named call cut in its arguments...
        ('{"name": "get_weather", "parameters": {', [("get_weather", "{")]),
        ('{"name": "get_weather", "parameters": {"city": "Pa', [("get_weather", '{"city": "Pa')]),
        # ...before them: the head itself, so that the arguments never read as {}...
        ('{"name": "get_weather",', [("get_weather", '{"name": "get_weather",')]),
        # ...inside the name: the one tool the cut name can be.
        ('{"name": "get_wea', [("get_weather", '{"name": "get_wea')]),
        # "required" without parallel_tool_calls false: a whole call, then the cut next one.
        (
            '{"name": "search", "parameters": {"q": "x"}},\n{"name": "get_weather", "param',
            [("search", '{"q": "x"}'), ("get_weather", '{"name": "get_weather", "param')],
        ),
        # A whole call and then something that is no call: the call, and nothing made up.
        ('{"name": "search", "parameters": {}},\n{\n "type": "function", "fu', [("search", "{}")]),
        # JSON's array form, and arguments that were whole when the cut came.
        ('[{"name": "search", "parameters": {"q": "x"}', [("search", '{"q": "x"}')]),
        ("Sure, here", None),
        ('{"name": "unknown_tool", "parameters": {', None),
    ],
)
def test_a_cut_forced_call_is_read_as_calls(text: str, expected: Any) -> None:
    assert cut(text) == expected


def test_a_cut_name_that_fits_several_tools_takes_the_forced_one() -> None:
    assert cut('{"name": "', forced="search") == [("search", '{"name": "')]
    assert cut('{"name": "', forced="") == [("", '{"name": "')]


def test_a_stream_holding_a_cut_forced_call_ends_with_it_and_stays_length() -> None:
    out = run(['{"name": "get_weather", ', '"parameters": {"ci'], forced="", finish="length")
    last = out[-1]
    assert last is not None and last.text is None
    assert last.finish_reason == "length"
    (delta,) = last.tool_calls
    assert (delta.name, delta.arguments) == ("get_weather", '{"ci')


def test_a_cut_call_is_text_when_no_call_was_forced() -> None:
    # tool_choice "auto": the model chose to write this; cut, it is what it wrote.
    out = run(['{"name": "get_weather", "parameters": {"ci'], finish="length")
    assert out[-1] is not None and out[-1].text == '{"name": "get_weather", "parameters": {"ci'
