"""Tool modes and structured-output fallbacks through the client, against the emulator."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Caller
from tests.support.emulator import TOOLS_REJECTED, Emulator, Reply, ToolEndpoint
from tir_transport import (
    BadRequestError,
    ChatChunk,
    ChatClient,
    StructuredOutputError,
    ToolCallAccumulator,
    build_payload,
)

MakeClient = Callable[..., ChatClient]

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
TEXT_CALL = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
SCHEMA = {
    "title": "City",
    "type": "object",
    "properties": {"name": {"type": "string"}, "country": {"type": "string"}},
    "required": ["name", "country"],
}


def tools_payload(stream: bool = False, **params: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    return build_payload(messages, "llama3_1_8b_instruct", stream=stream, tools=[TOOL], **params)


def schema_payload(stream: bool = False) -> dict[str, Any]:
    messages = [{"role": "user", "content": "A city in India"}]
    response_format = {"type": "json_schema", "json_schema": {"name": "City", "schema": SCHEMA}}
    return build_payload(
        messages, "llama3_1_8b_instruct", stream=stream, response_format=response_format
    )


def call_of(
    call: Caller, client: ChatClient, payload: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The one tool call of a reply, streamed or not."""
    if payload.get("stream"):
        chunks: list[ChatChunk] = call.stream(client, payload)
        acc = ToolCallAccumulator()
        for chunk in chunks:
            acc.add(chunk.tool_calls)
        assert "".join(c.text or "" for c in chunks) == ""
        assert any(c.finish_reason == "tool_calls" for c in chunks)
        (tool_call,) = acc.result()
    else:
        completion = call.create(client, payload)
        assert completion.text is None
        assert completion.finish_reason == "tool_calls"
        (tool_call,) = completion.tool_calls
    assert tool_call.id
    return tool_call.name, json.loads(tool_call.arguments)


@pytest.fixture(params=[False, True], ids=["create", "stream"])
def streaming(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_native_tools_accepted(
    make_client: MakeClient, emulator: Emulator, call: Caller, streaming: bool
) -> None:
    emulator.queue(Reply(tool_calls=[{"name": "get_weather", "arguments": '{"city": "Paris"}'}]))
    result = call_of(call, make_client(), tools_payload(streaming))
    assert result == ("get_weather", {"city": "Paris"})
    (request,) = emulator.requests
    assert request.json["tools"] == [TOOL]


def test_native_tools_rejected_falls_back_to_prompt_mode_and_remembers(
    make_client: MakeClient,
    emulator: Emulator,
    call: Caller,
    streaming: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator.reject_tools = True
    emulator.queue(Reply(text=TEXT_CALL), Reply(text=TEXT_CALL))
    client = make_client()
    with caplog.at_level(logging.INFO, logger="tir_transport"):
        assert call_of(call, client, tools_payload(streaming)) == ("get_weather", {"city": "Paris"})
        assert call_of(call, client, tools_payload(streaming)) == ("get_weather", {"city": "Paris"})
    rejected, prompted, remembered = emulator.requests
    assert "tools" in rejected.json
    for request in (prompted, remembered):
        assert "tools" not in request.json
        first_user = next(m for m in request.json["messages"] if m["role"] == "user")
        assert first_user["content"].startswith("Given the following functions")
        assert '"name": "get_weather"' in first_user["content"]
    switches = [r for r in caplog.records if "does not take native tools" in r.getMessage()]
    assert len(switches) == 1
    assert switches[0].levelno == logging.INFO


def test_prompt_mode_streams_plain_text_without_delay(
    make_client: MakeClient, emulator: Emulator, call: Caller
) -> None:
    emulator.queue(Reply(text="It is sunny in Paris today."))
    chunks = call.stream(make_client(tool_mode="prompt"), tools_payload(True))
    texts = [c.text for c in chunks if c.text]
    assert texts == ["It", " is", " sunny", " in", " Paris", " today."]
    assert "tools" not in emulator.requests[0].json


def test_text_format_call_in_native_mode(
    make_client: MakeClient, emulator: Emulator, call: Caller, streaming: bool
) -> None:
    emulator.queue(
        Reply(
            pieces=[
                "<|python_tag|>",
                '{"name": "get_weather", ',
                '"parameters": {"city": "Paris"}}',
            ]
        )
    )
    result = call_of(call, make_client(tool_mode="native"), tools_payload(streaming))
    assert result == ("get_weather", {"city": "Paris"})
    assert emulator.requests[0].json["tools"] == [TOOL]


def test_forced_mode_native_never_falls_back(
    make_client: MakeClient, emulator: Emulator, call: Caller
) -> None:
    emulator.reject_tools = True
    with pytest.raises(BadRequestError) as info:
        call.create(make_client(tool_mode="native"), tools_payload())
    assert info.value.message == TOOLS_REJECTED
    assert len(emulator.requests) == 1


def test_forced_prompt_mode_never_sends_tools(
    make_client: MakeClient, emulator: Emulator, call: Caller
) -> None:
    emulator.queue(Reply(text=TEXT_CALL))
    client = make_client(tool_mode="prompt")
    assert call_of(call, client, tools_payload(tool_choice="required")) == (
        "get_weather",
        {"city": "Paris"},
    )
    (request,) = emulator.requests
    assert "tools" not in request.json
    assert "You must call one of these functions" in json.dumps(request.json["messages"])


def test_tool_choice_none_reads_no_calls(
    make_client: MakeClient, emulator: Emulator, call: Caller
) -> None:
    emulator.queue(Reply(text=TEXT_CALL))
    completion = call.create(make_client(), tools_payload(tool_choice="none"))
    assert completion.text == TEXT_CALL
    assert completion.tool_calls == ()


def test_invalid_mode() -> None:
    from tir_transport import TIRConfig

    with pytest.raises(ValueError, match="tool_mode"):
        ChatClient(TIRConfig(), tool_mode="magic")  # type: ignore[arg-type]


# -- structured output fallbacks -------------------------------------------------------------


def parsed(call: Caller, client: ChatClient, payload: dict[str, Any]) -> Any:
    if payload.get("stream"):
        return json.loads("".join(c.text or "" for c in call.stream(client, payload)))
    return json.loads(call.create(client, payload).text or "")


def test_response_format_accepted(
    make_client: MakeClient, emulator: Emulator, call: Caller, streaming: bool
) -> None:
    assert parsed(call, make_client(), schema_payload(streaming)) == {
        "name": "emulated",
        "country": "emulated",
    }
    (request,) = emulator.requests
    assert request.json["response_format"]["json_schema"]["schema"] == SCHEMA


def test_response_format_rejected_uses_guided_json(
    make_client: MakeClient, emulator: Emulator, call: Caller, streaming: bool
) -> None:
    emulator.reject_response_format = True
    client = make_client()
    assert parsed(call, client, schema_payload(streaming)) == {
        "name": "emulated",
        "country": "emulated",
    }
    parsed(call, client, schema_payload(streaming))
    rejected, guided, remembered = emulator.requests
    assert "response_format" in rejected.json
    assert guided.json["guided_json"] == SCHEMA
    assert "response_format" not in guided.json
    assert remembered.json["guided_json"] == SCHEMA


def test_guided_json_rejected_too_uses_json_mode_an_instruction_and_one_repair(
    make_client: MakeClient, emulator: Emulator, call: Caller
) -> None:
    emulator.reject_response_format = True
    emulator.reject_guided_json = True
    emulator.queue(
        Reply(text="Pune is a city in India."),
        Reply(text='```json\n{"name": "Pune", "country": "India"}\n```'),
    )
    completion = call.create(make_client(), schema_payload())
    assert json.loads(completion.text or "") == {"name": "Pune", "country": "India"}
    _, rejected_guided, instructed, repair = emulator.requests
    assert "guided_json" in rejected_guided.json
    for request in (instructed, repair):
        assert "guided_json" not in request.json
        assert request.json["response_format"] == {"type": "json_object", "schema": SCHEMA}
        assert json.dumps(SCHEMA) in request.json["messages"][0]["content"]
    assert repair.json["messages"][-2] == {
        "role": "assistant",
        "content": "Pune is a city in India.",
    }
    assert "not JSON" in repair.json["messages"][-1]["content"]


def test_no_response_format_at_all_uses_an_instruction_alone(
    make_client: MakeClient, emulator: Emulator, call: Caller
) -> None:
    emulator.reject_response_format = True
    emulator.reject_guided_json = True
    emulator.reject_json_object = True
    emulator.queue(Reply(text='{"name": "Pune", "country": "India"}'))
    completion = call.create(make_client(), schema_payload())
    assert json.loads(completion.text or "") == {"name": "Pune", "country": "India"}
    *_, rejected_json_mode, instructed = emulator.requests
    assert rejected_json_mode.json["response_format"]["type"] == "json_object"
    assert "response_format" not in instructed.json
    assert json.dumps(SCHEMA) in instructed.json["messages"][0]["content"]
    assert len(emulator.requests) == 4


def test_a_second_bad_reply_is_a_clear_error(
    make_client: MakeClient, emulator: Emulator, call: Caller
) -> None:
    emulator.reject_response_format = True
    emulator.reject_guided_json = True
    emulator.queue(Reply(text="Pune."), Reply(text='{"name": "Pune"}'))
    with pytest.raises(StructuredOutputError, match=r"lacks the required keys \['country'\]"):
        call.create(make_client(), schema_payload())
    assert len(emulator.requests) == 4


def test_guided_json_ignored_by_the_server_is_noticed(
    make_client: MakeClient, emulator: Emulator, call: Caller
) -> None:
    # A server that drops unknown fields "accepts" guided_json and answers in prose.
    emulator.reject_response_format = True
    emulator.queue(Reply(text="Pune, India."), Reply(text='{"name": "Pune", "country": "India"}'))
    completion = call.create(make_client(), schema_payload())
    assert json.loads(completion.text or "") == {"name": "Pune", "country": "India"}
    assert len(emulator.requests) == 3
    assert "guided_json" not in emulator.requests[2].json
    assert emulator.requests[2].json["response_format"]["type"] == "json_object"


@pytest.mark.parametrize("kind", ToolEndpoint.KINDS)
def test_non_ascii_arguments_on_every_endpoint_kind(
    make_client: MakeClient, emulator: Emulator, call: Caller, streaming: bool, kind: str
) -> None:
    endpoint = ToolEndpoint(emulator, kind)
    emulator.queue(endpoint.call("get_weather", ToolEndpoint.NON_ASCII))
    result = call_of(call, make_client(), tools_payload(streaming))
    assert result == ("get_weather", ToolEndpoint.NON_ASCII)
    assert endpoint.tools_were_native() is (kind != "rejected")
