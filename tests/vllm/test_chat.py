"""The core (`tir_transport`) against a real vLLM: SmolLM2-135M served as llama3_1_8b_instruct.

What only the engine shows: usage on exactly one streamed chunk, guided decoding forcing real
tool calls and schemas, the `required` + parallel failure mode, its error bodies and statuses.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from tests.conftest import Caller
from tests.vllm.conftest import Engine
from tir_llama.cli import main as cli_main
from tir_transport import (
    BadRequestError,
    ChatChunk,
    ChatClient,
    ContextLengthExceededError,
    NotFoundError,
    TIRConfig,
    ToolCall,
    ToolCallAccumulator,
    build_payload,
    track_usage,
)

pytestmark = pytest.mark.vllm

MODEL = "llama3_1_8b_instruct"
# Any key: vLLM started without --api-key takes every one.
KEY = "vllm-local"
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "country": {"type": "string"}},
    "required": ["name", "country"],
    "additionalProperties": False,
}


def strict(tool: dict[str, Any]) -> dict[str, Any]:
    return {**tool, "function": {**tool["function"], "strict": True}}


def client(engine: Engine, **options: Any) -> ChatClient:
    tool_mode = options.pop("tool_mode", "auto")
    config = TIRConfig.from_env(api_key=KEY, base_url=engine.base_url, timeout=120, **options)
    return ChatClient(config, tool_mode=tool_mode)


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def tool_calls(call: Caller, engine: Engine, body: dict[str, Any]) -> tuple[list[ToolCall], Any]:
    """The calls of a reply, streamed (merged from deltas) or not; and its finish_reason."""
    if body.get("stream"):
        chunks = call.stream(client(engine), body)
        accumulator = ToolCallAccumulator()
        for chunk in chunks:
            accumulator.add(chunk.tool_calls)
        assert not "".join(c.text or "" for c in chunks).strip()
        finish = next(c.finish_reason for c in chunks if c.finish_reason)
        return accumulator.result(), finish
    completion = call.create(client(engine), body)
    assert not (completion.text or "").strip()
    return list(completion.tool_calls), completion.finish_reason


def test_create_counts_usage(vllm_chat: Engine, call: Caller) -> None:
    body = build_payload(ask("What is the capital of France?"), MODEL, max_tokens=12, temperature=0)
    with track_usage() as usage:
        completion = call.create(client(vllm_chat), body)
    assert "Paris" in (completion.text or "")
    assert completion.model == MODEL
    assert completion.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert 0 < completion.usage.output_tokens <= 12
    # Llama 3.1's frame around an eight-word question: about 50 tokens, as vLLM counts them.
    assert 40 <= completion.usage.input_tokens <= 60
    assert (usage.requests, usage.total_tokens) == (1, completion.usage.total_tokens)


@pytest.mark.parametrize("include_usage", [True, False], ids=["usage", "no-usage"])
def test_stream_usage_comes_once_at_the_end(
    vllm_chat: Engine, call: Caller, include_usage: bool
) -> None:
    body = build_payload(
        ask("Count: one, two,"),
        MODEL,
        stream=True,
        include_usage=include_usage,
        max_tokens=10,
        temperature=0,
    )
    with track_usage() as usage:
        chunks = call.stream(client(vllm_chat), body)
    assert "".join(c.text or "" for c in chunks)
    assert chunks[0].role == "assistant"
    carrying = [c for c in chunks if c.usage is not None]
    if not include_usage:
        # vLLM sends none then, and none is invented: the request is counted without usage.
        assert carrying == []
        assert (usage.requests, usage.requests_without_usage, usage.total_tokens) == (1, 1, 0)
        return
    # vLLM puts usage on one chunk of its own, after the one with finish_reason.
    (last,) = carrying
    assert last is chunks[-1]
    finished = [i for i, c in enumerate(chunks) if c.finish_reason is not None]
    assert finished == [len(chunks) - 2]
    assert last.usage is not None and 0 < last.usage.output_tokens <= 10
    assert (usage.requests, usage.total_tokens) == (1, last.usage.total_tokens)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_required_tool_call_is_a_real_call(vllm_chat: Engine, call: Caller, stream: bool) -> None:
    # Guided decoding forces a call to one of the tools; strict holds its arguments to the
    # schema; parallel_tool_calls false stops it after one call.
    body = build_payload(
        ask("What is the weather in Paris?"),
        MODEL,
        stream=stream,
        max_tokens=60,
        temperature=0,
        tools=[strict(WEATHER), strict(TIME)],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    (tool_call,), finish = tool_calls(call, vllm_chat, body)
    assert tool_call.name in ("get_weather", "get_time")
    assert tool_call.id and tool_call.id.startswith("chatcmpl-tool-")
    arguments = json.loads(tool_call.arguments)
    assert isinstance(arguments["city"], str)
    assert finish == "tool_calls"


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_named_strict_tool_call(vllm_chat: Engine, call: Caller, stream: bool) -> None:
    body = build_payload(
        ask("What is the weather in Paris?"),
        MODEL,
        stream=stream,
        max_tokens=60,
        temperature=0,
        tools=[strict(WEATHER), strict(TIME)],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    (tool_call,), finish = tool_calls(call, vllm_chat, body)
    assert tool_call.name == "get_time"
    assert set(json.loads(tool_call.arguments)) == {"city"}
    # vLLM says "stop" for a named function (and "tool_calls" for required).
    assert finish == "stop"


@pytest.mark.parametrize(
    "stream",
    [pytest.param(False, id="create"), pytest.param(True, id="stream")],
)
def test_required_with_parallel_calls_never_reaches_the_user_as_text(
    vllm_chat: Engine, call: Caller, stream: bool
) -> None:
    # Without parallel_tool_calls false, guided decoding lets the model run on past its first
    # call; cut by max_tokens, vLLM sends the raw JSON as content with finish_reason length.
    body = build_payload(
        ask("What is the weather in Paris?"),
        MODEL,
        stream=stream,
        max_tokens=80,
        temperature=0,
        tools=[WEATHER, TIME],
        tool_choice="required",
    )
    if stream:
        chunks = call.stream(client(vllm_chat), body)
        text = "".join(c.text or "" for c in chunks)
        accumulator = ToolCallAccumulator()
        for chunk in chunks:
            accumulator.add(chunk.tool_calls)
        calls = accumulator.result()
    else:
        completion = call.create(client(vllm_chat), body)
        text, calls = completion.text or "", list(completion.tool_calls)
    assert '"name"' not in text and '"parameters"' not in text
    assert calls and calls[0].name in ("get_weather", "get_time")


def test_tool_result_round_trip(vllm_chat: Engine, call: Caller) -> None:
    # The call and its result go back in vLLM's shape; the model answers in words.
    first = call.create(
        client(vllm_chat),
        build_payload(
            ask("What is the weather in Paris?"),
            MODEL,
            max_tokens=40,
            temperature=0,
            tools=[strict(WEATHER)],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        ),
    )
    (tool_call,) = first.tool_calls
    messages = [
        *ask("What is the weather in Paris?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": tool_call.id,
                    "type": "function",
                    "function": {"name": tool_call.name, "arguments": tool_call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": tool_call.id, "content": "Sunny, 24 degrees"},
    ]
    answer = call.create(
        client(vllm_chat),
        build_payload(messages, MODEL, max_tokens=30, temperature=0, tools=[WEATHER]),
    )
    assert answer.text and not answer.tool_calls
    assert answer.usage is not None and answer.usage.input_tokens > 100


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_response_format_json_schema(vllm_chat: Engine, call: Caller, stream: bool) -> None:
    body = build_payload(
        ask("Name a city in India, as JSON."),
        MODEL,
        stream=stream,
        max_tokens=60,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "City", "schema": CITY_SCHEMA, "strict": True},
        },
    )
    if stream:
        text = "".join(c.text or "" for c in call.stream(client(vllm_chat), body))
    else:
        text = call.create(client(vllm_chat), body).text or ""
    city = json.loads(text)
    assert set(city) == {"name", "country"}
    assert all(isinstance(v, str) for v in city.values())


def test_logprobs(vllm_chat: Engine, call: Caller) -> None:
    body = build_payload(
        ask("What year is it?"), MODEL, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2
    )
    completion = call.create(client(vllm_chat), body)
    content = completion.raw["choices"][0]["logprobs"]["content"]
    assert completion.usage is not None
    assert len(content) == completion.usage.output_tokens
    assert "".join(entry["token"] for entry in content) == completion.text
    assert all(len(entry["top_logprobs"]) == 2 for entry in content)


def test_n_above_one_is_refused_before_sending(vllm_chat: Engine) -> None:
    # vLLM would make and bill both (interleaved when streamed: index 0 and 1, one usage chunk);
    # a chat call returns one, so the request is refused before anything is sent.
    with pytest.raises(ValueError, match="n=2 is not supported"):
        build_payload(ask("Say hi."), MODEL, max_tokens=4, n=2)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_a_raw_payload_with_n_2_is_refused_before_sending(
    vllm_chat: Engine, call: Caller, stream: bool
) -> None:
    # Given whole to the client (not built by build_payload), n=2 would be sent as it is:
    # vLLM bills two answers, and its stream interleaves them (index 0 and 1), which a
    # reader of choices[0] merged into one text before this was refused.
    body = {
        "model": MODEL,
        "messages": ask("Name a colour."),
        "max_tokens": 6,
        "temperature": 1.0,
        "n": 2,
        "stream": stream,
    }
    with track_usage() as usage, pytest.raises(ValueError, match="n=2 is not supported"):
        if stream:
            call.stream(client(vllm_chat), body)
        else:
            call.create(client(vllm_chat), body)
    assert usage.requests == 0


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_prompt_over_the_window(vllm_chat: Engine, call: Caller, stream: bool) -> None:
    body = build_payload(ask("hello " * 5000), MODEL, stream=stream, max_tokens=8)
    with pytest.raises(ContextLengthExceededError, match="maximum context length is 4096 tokens"):
        if stream:
            call.stream(client(vllm_chat), body)
        else:
            call.create(client(vllm_chat), body)


def test_max_tokens_over_the_window(vllm_chat: Engine, call: Caller) -> None:
    body = build_payload(ask("Say hi."), MODEL, max_tokens=5000)
    with pytest.raises(BadRequestError, match="max_model_len=4096") as caught:
        call.create(client(vllm_chat), body)
    assert caught.value.status_code == 400


def test_max_tokens_past_the_window_after_the_prompt_are_capped(
    vllm_chat: Engine, call: Caller
) -> None:
    # A prompt that fits with a max_tokens that does not: vLLM answers 200 and stops at the
    # window ("length"), no error.
    body = build_payload(ask("hello " * 4000), MODEL, max_tokens=1000, temperature=0)
    completion = call.create(client(vllm_chat), body)
    assert completion.usage is not None
    assert completion.usage.total_tokens <= 4096
    assert completion.finish_reason == "length" or completion.usage.output_tokens < 96


def test_tool_choice_naming_no_tool_is_the_callers_error(
    vllm_chat: Engine, call: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    body = build_payload(
        ask("What is the weather in Paris?"),
        MODEL,
        max_tokens=8,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "nope"}},
    )
    with (
        caplog.at_level(logging.INFO, logger="tir_transport"),
        pytest.raises(BadRequestError, match="does not match any of the specified") as caught,
    ):
        call.create(client(vllm_chat), body)
    assert caught.value.status_code == 400
    # Not taken for an endpoint without tool parsing: no fallback to tools in the prompt.
    assert not [r for r in caplog.records if "does not take native tools" in r.getMessage()]


def test_unknown_model(vllm_chat: Engine, call: Caller) -> None:
    body = build_payload(ask("hi"), "llama3_1_70b_instruct", max_tokens=4)
    with pytest.raises(NotFoundError, match="llama3_1_70b_instruct") as caught:
        call.create(client(vllm_chat), body)
    assert caught.value.status_code == 404


def test_doctor_reads_the_served_window(vllm_chat: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_API_KEY", KEY)
    out = io.StringIO()
    code = cli_main(["--base-url", vllm_chat.base_url, "doctor"], out)
    text = out.getvalue()
    assert code == 0, text
    assert "native tool calling is on" in text
    assert "window:      4,096 tokens served (the endpoint's max_model_len)" in text
    # llama3_1_8b_instruct's own window is 131,072: the served one differs, and doctor says so.
    assert "context_window=4096" in text
    assert KEY not in text


def test_chunks_are_whole_values(vllm_chat: Engine, call: Caller) -> None:
    # Every chunk vLLM sends parses: ids and the model on each, nothing left unread.
    body = build_payload(ask("Say hello."), MODEL, stream=True, max_tokens=6, temperature=0)
    chunks: list[ChatChunk] = call.stream(client(vllm_chat), body)
    assert {c.model for c in chunks} == {MODEL}
    assert len({c.id for c in chunks}) == 1
