from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tir_transport import (
    ChatChunk,
    ChatCompletion,
    ContextLengthExceededError,
    InvalidResponseError,
    StreamInterruptedError,
    TIRError,
    ToolCall,
    ToolCallDelta,
    Usage,
    build_payload,
)
from tir_transport._chat.wire import ToolCallAccumulator, parse_chunk, parse_completion
from tir_transport._sse import SSEDecoder

SEED = (
    Path(__file__).resolve().parent.parent / "support" / "fixtures" / "seed_stream.txt"
).read_bytes()
MESSAGES = [{"role": "user", "content": "hi"}]


def test_payload_sends_only_what_is_set() -> None:
    payload = build_payload(MESSAGES, "m", temperature=0.0, max_tokens=None, top_p=None, seed=3)
    assert payload == {"model": "m", "messages": MESSAGES, "temperature": 0.0, "seed": 3}


def test_stream_options_only_when_streaming() -> None:
    assert "stream_options" not in build_payload(MESSAGES, "m")
    assert "stream" not in build_payload(MESSAGES, "m")
    streamed = build_payload(MESSAGES, "m", stream=True)
    assert streamed["stream"] is True
    assert streamed["stream_options"] == {"include_usage": True}
    assert "stream_options" not in build_payload(MESSAGES, "m", stream=True, include_usage=False)


@pytest.mark.parametrize("where", ["field", "extra_body"])
def test_the_callers_stream_options_go_on_streams_only(where: str) -> None:
    # OpenAILike users pass them (additional_kwargs) for vLLM's usage; vLLM refuses them on a
    # request that does not stream, and its continuous_usage_stats must not be lost on one
    # that does.
    theirs = {"stream_options": {"include_usage": False, "continuous_usage_stats": True}}
    fields: dict[str, Any] = {"extra_body": theirs} if where == "extra_body" else theirs
    assert "stream_options" not in build_payload(MESSAGES, "m", **fields)
    streamed = build_payload(MESSAGES, "m", stream=True, **fields)
    assert streamed["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    unasked = build_payload(MESSAGES, "m", stream=True, include_usage=False, **fields)
    assert unasked["stream_options"] == theirs["stream_options"]


@pytest.mark.parametrize("option", ["extra_headers", "extra_query", "timeout"])
def test_the_openai_clients_options_are_refused_not_sent(option: str) -> None:
    # ChatOpenAI and OpenAILike programs pass them among the request's fields, and the openai
    # client takes them out of the body; sent as fields, vLLM would ignore them.
    fields: dict[str, Any] = {option: {"X-Trace": "1"}}
    with pytest.raises(ValueError, match=f"'{option}' is an option of the openai client"):
        build_payload(MESSAGES, "m", **fields)


def test_extra_body_passes_vllm_fields_through_last() -> None:
    payload = build_payload(
        MESSAGES, "m", temperature=0.5, extra_body={"top_k": 20, "repetition_penalty": 1.1}
    )
    assert payload["top_k"] == 20
    assert payload["repetition_penalty"] == 1.1
    assert payload["temperature"] == 0.5


def test_empty_messages_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least one message"):
        build_payload([], "m")


def test_seed_stream_parses_to_the_recorded_text() -> None:
    events = SSEDecoder().feed(SEED)
    chunks = [parse_chunk(e.data) for e in events if e.data != "[DONE]"]
    assert chunks[0].role == "assistant"
    assert chunks[0].text is None
    assert "".join(c.text or "" for c in chunks) == "Hello. How can I assist you today?"
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].stop_reason is None
    assert {c.id for c in chunks} == {"chat-b3b5ae1d266c428f894f05e33a39ea5b"}
    assert {c.model for c in chunks} == {"llama3_1_8b_instruct"}
    assert all(c.usage is None for c in chunks)


def test_usage_chunk_with_empty_choices() -> None:
    chunk = parse_chunk(
        '{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
        '"usage":{"prompt_tokens":7,"total_tokens":16,"completion_tokens":9}}'
    )
    assert chunk.usage == Usage(7, 9, 16)
    assert chunk.text is None
    assert chunk.finish_reason is None


def test_older_vllm_usage_null_on_every_chunk() -> None:
    chunk = parse_chunk(
        '{"id":"x","model":"m","choices":[{"index":0,"delta":{"content":"a"}}],"usage":null}'
    )
    assert chunk.usage is None
    assert chunk.text == "a"


def test_tool_call_deltas_by_index() -> None:
    first = parse_chunk(
        '{"id":"x","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"id":"call-1",'
        '"type":"function","index":0,"function":{"name":"get_weather"}}]}}]}'
    )
    second = parse_chunk(
        '{"id":"x","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
        '"function":{"arguments":"{\\"city\\": "}}]}}]}'
    )
    assert first.tool_calls == (ToolCallDelta(0, "call-1", "get_weather", None),)
    assert second.tool_calls == (ToolCallDelta(0, None, None, '{"city": '),)


def test_accumulator_sets_name_and_id_once_and_appends_arguments() -> None:
    acc = ToolCallAccumulator()
    assert not acc
    acc.add([ToolCallDelta(1, "b", "second", "")])
    acc.add([ToolCallDelta(0, "a", "first", '{"x"')])
    acc.add([ToolCallDelta(0, None, None, ": 1}"), ToolCallDelta(1, None, "ignored", "{}")])
    acc.add([ToolCallDelta(0, "a", "first", None)])  # a repeated header must not duplicate
    assert acc.result() == [ToolCall("a", "first", '{"x": 1}'), ToolCall("b", "second", "{}")]


def test_accumulator_gives_ids_to_calls_without_one() -> None:
    acc = ToolCallAccumulator()
    acc.add([ToolCallDelta(0, None, "f", "{}")])
    assert acc.result() == [ToolCall("call_0", "f", "{}")]


def test_full_response() -> None:
    body = {
        "id": "chat-a8fa533f74b346688f780c3b2e14638f",
        "object": "chat.completion",
        "created": 1738753122,
        "model": "llama3_1_8b_instruct",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        },
                        {
                            "id": "t2",
                            "type": "function",
                            "function": {"name": "g", "arguments": {}},
                        },
                    ],
                },
                "finish_reason": "tool_calls",
                "stop_reason": 128008,
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    completion = parse_completion(body)
    assert completion.id == "chat-a8fa533f74b346688f780c3b2e14638f"
    assert completion.text is None
    assert completion.tool_calls == (ToolCall("t1", "f", '{"a": 1}'), ToolCall("t2", "g", "{}"))
    assert completion.finish_reason == "tool_calls"
    assert completion.stop_reason == 128008
    assert completion.usage == Usage(10, 5, 15)
    assert completion.raw is body


@pytest.mark.parametrize(
    "body",
    [
        {"object": "error", "message": "boom", "type": "InternalServerError", "code": 500},
        {"error": {"message": "boom", "type": "InternalServerError", "code": 500}},
    ],
    ids=["flat", "nested"],
)
def test_error_event_in_stream_raises_with_the_server_message(body: dict[str, object]) -> None:
    with pytest.raises(StreamInterruptedError, match="boom") as info:
        parse_chunk(json.dumps(body))
    assert info.value.status_code == 500


def test_context_error_event_keeps_its_class() -> None:
    body = {"object": "error", "message": "This model's maximum context length is 8 tokens"}
    with pytest.raises(ContextLengthExceededError):
        parse_chunk(json.dumps(body))


def test_error_body_in_a_200_full_response_raises() -> None:
    with pytest.raises(TIRError, match="nope"):
        parse_completion({"error": {"message": "nope", "code": 503}})


def test_chunk_that_is_not_json_quotes_its_start() -> None:
    with pytest.raises(InvalidResponseError, match=r"not JSON: '<html>gateway") as info:
        parse_chunk("<html>gateway timeout" + "x" * 1000)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("data", ["[1,2]", '"text"', "null"])
def test_chunk_that_is_not_an_object(data: str) -> None:
    with pytest.raises(InvalidResponseError):
        parse_chunk(data)


@pytest.mark.parametrize("body", [[], {"choices": []}, {"id": "x"}, {"choices": ["a"]}])
def test_full_response_without_choices(body: object) -> None:
    with pytest.raises(InvalidResponseError):
        parse_completion(body)


@given(st.text(max_size=200))
def test_random_chunk_text_raises_only_tir_errors(text: str) -> None:
    try:
        value = json.loads(text)
    except ValueError:
        # Not JSON: always an InvalidResponseError that says so (anything else fails here).
        with pytest.raises(InvalidResponseError, match="JSON"):
            parse_chunk(text)
        return
    try:
        chunk = parse_chunk(text)
    except (InvalidResponseError, StreamInterruptedError) as error:
        assert str(error)
        return
    # Only a JSON object can be a chunk.
    assert isinstance(value, dict) and isinstance(chunk, ChatChunk)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "choices",
                    "delta",
                    "message",
                    "tool_calls",
                    "function",
                    "index",
                    "content",
                    "usage",
                    "error",
                    "object",
                    "finish_reason",
                    "arguments",
                    "name",
                    "id",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(_json)
def test_random_json_shapes_raise_only_tir_errors(value: object) -> None:
    parsers: list[tuple[Callable[[], object], type]] = [
        (lambda: parse_chunk(json.dumps(value)), ChatChunk),
        (lambda: parse_completion(value), ChatCompletion),
    ]
    for parse, kind in parsers:
        try:
            result = parse()
        except TIRError as error:  # anything else escapes and fails the test
            assert str(error), "an error that says nothing"
            continue
        # What parses is an object with choices (a chunk may have none: the usage chunk).
        assert isinstance(result, kind) and isinstance(value, dict)
        if kind is ChatCompletion:
            assert value.get("choices"), value


# Some OpenAI-compatible gateways send content as a list of parts; the text is one string
# (as langchain-core's `message.text` reads it), never the list.
PARTS = [{"type": "text", "text": "Hel"}, {"type": "image_url", "image_url": {}}, {"text": "lo"}]


def test_a_chunk_whose_content_is_a_list_of_parts_reads_as_text() -> None:
    data = {"id": "c", "choices": [{"index": 0, "delta": {"content": PARTS}}]}
    assert parse_chunk(json.dumps(data)).text == "Hello"


def test_a_reply_whose_content_is_a_list_of_parts_reads_as_text() -> None:
    message = {"role": "assistant", "content": PARTS}
    data = {"id": "c", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    assert parse_completion(data).text == "Hello"
