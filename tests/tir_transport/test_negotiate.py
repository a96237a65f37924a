"""The chat negotiation's stream plan, run by hand: no I/O, every step seen.

`ChatClient.stream` and `AsyncChatStream` are two thin drivers of this one plan; the tests
against the emulator (test_client.py, test_tools.py) run it through both.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.emulator import TOOLS_REJECTED
from tir_transport import BadRequestError, ChatChunk, StreamInterruptedError, build_payload
from tir_transport._chat.negotiate import (
    EndpointMemory,
    Negotiation,
    OpenStream,
    SchemaLevel,
)

URL = "http://127.0.0.1:1/v1/chat/completions"
TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def chunk(text: str | None = None, finish: str | None = None) -> ChatChunk:
    return ChatChunk(
        id="c1",
        model="m",
        text=text,
        role="assistant",
        tool_calls=(),
        finish_reason=finish,
        stop_reason=None,
        usage=None,
        raw={},
    )


def payload(**params: Any) -> dict[str, Any]:
    return build_payload([{"role": "user", "content": "hi"}], "m", stream=True, **params)


def test_a_plain_stream_hands_each_chunk_on_as_it_comes() -> None:
    body = payload()
    plan = Negotiation(body, URL, "auto").stream_exchange()
    assert next(plan) == OpenStream(body)
    assert plan.send(chunk("Hel")) == [chunk("Hel")]
    assert plan.send(chunk("lo", "stop")) == [chunk("lo", "stop")]
    with pytest.raises(StopIteration):
        plan.send(None)


def test_tools_the_endpoint_rejects_go_again_in_the_prompt_and_are_remembered() -> None:
    memory = EndpointMemory()
    body = payload(tools=[TOOL])
    plan = Negotiation(body, URL, "auto", memory).stream_exchange()
    assert next(plan) == OpenStream(body)
    step = plan.send(BadRequestError(TOOLS_REJECTED, status_code=400))
    assert isinstance(step, OpenStream)
    assert "tools" not in step.body  # in the prompt now
    assert "get_time" in str(step.body["messages"])
    assert memory.prompt_tool_endpoints == {URL}


def test_an_error_after_a_chunk_was_handed_on_is_raised_not_retried() -> None:
    plan = Negotiation(payload(tools=[TOOL]), URL, "auto").stream_exchange()
    next(plan)
    assert plan.send(chunk("The time is")) == [chunk("The time is")]
    broke = StreamInterruptedError("the stream broke off")
    with pytest.raises(StreamInterruptedError):
        plan.send(broke)


def test_an_error_nothing_can_answer_is_raised() -> None:
    plan = Negotiation(payload(), URL, "auto").stream_exchange()
    next(plan)
    with pytest.raises(BadRequestError):
        plan.send(BadRequestError("max_tokens must be at least 1", status_code=400))


def test_a_reply_checked_whole_is_held_then_handed_on_clean() -> None:
    memory = EndpointMemory()
    memory.schema_levels[URL] = SchemaLevel.JSON_MODE  # the endpoint took no schema before
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}
    plan = Negotiation(payload(response_format=fmt), URL, "auto", memory).stream_exchange()
    opened = next(plan)
    assert isinstance(opened, OpenStream)
    assert opened.body["response_format"]["type"] == "json_object"
    # Nothing is handed on until the whole reply is in and matches the schema.
    assert plan.send(chunk('{"a": ')) == []
    assert plan.send(chunk("1}", "stop")) == []
    handed_on = plan.send(None)
    assert isinstance(handed_on, list)
    text, closing = handed_on
    assert text.text == '{"a": 1}' and closing.finish_reason == "stop"
    with pytest.raises(StopIteration):
        plan.send(None)


def test_a_reply_that_does_not_match_is_asked_again_once() -> None:
    memory = EndpointMemory()
    memory.schema_levels[URL] = SchemaLevel.INSTRUCTION
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}
    plan = Negotiation(payload(response_format=fmt), URL, "auto", memory).stream_exchange()
    next(plan)
    assert plan.send(chunk("no JSON here", "stop")) == []
    repair = plan.send(None)
    assert isinstance(repair, OpenStream)
    assert "no JSON here" in str(repair.body["messages"])  # the reply, shown back to the model


def test_the_levels_only_go_down() -> None:
    assert list(SchemaLevel) == sorted(SchemaLevel)
    assert SchemaLevel.NATIVE < SchemaLevel.GUIDED_JSON < SchemaLevel.INSTRUCTION
