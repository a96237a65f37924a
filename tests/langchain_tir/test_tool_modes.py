"""ChatTIRLlama behaves the same on every kind of endpoint: tools native, rejected, or in text."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from langchain_tir import ChatTIRLlama
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply, ToolEndpoint
from tests.support.runnables import Mode


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"It is sunny in {city}."


@pytest.fixture(params=ToolEndpoint.KINDS)
def endpoint(request: pytest.FixtureRequest, emulator: Emulator) -> ToolEndpoint:
    return ToolEndpoint(emulator, request.param)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> Mode:
    return Mode(request.param)


@pytest.fixture
def llm(emulator: Emulator) -> ChatTIRLlama:
    return ChatTIRLlama(api_key=TEST_KEY, base_url=emulator.base_url, timeout=5)


def test_bind_tools_invoke_and_stream(
    llm: ChatTIRLlama, endpoint: ToolEndpoint, mode: Mode
) -> None:
    bound = llm.bind_tools([get_weather])
    endpoint.emulator.queue(
        endpoint.call("get_weather", {"city": "Paris"}),
        endpoint.call("get_weather", {"city": "Paris"}),
    )
    message = mode.invoke(bound, "Weather in Paris?")
    assert isinstance(message, AIMessage)
    assert message.content == ""
    (tool_call,) = message.tool_calls
    assert (tool_call["name"], tool_call["args"]) == ("get_weather", {"city": "Paris"})
    assert tool_call["id"]
    chunks = mode.stream(bound, "Weather in Paris?")
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    assert isinstance(full, AIMessageChunk)
    assert full.content == ""
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert full.response_metadata["finish_reason"] == "tool_calls"
    assert endpoint.tools_were_native() is (endpoint.kind != "rejected")


def test_langgraph_agent_finishes_a_tool_loop(
    llm: ChatTIRLlama, endpoint: ToolEndpoint, mode: Mode
) -> None:
    from langchain.agents import create_agent

    endpoint.emulator.queue(
        endpoint.call("get_weather", {"city": "Paris"}), Reply(text="Sunny in Paris.")
    )
    agent = create_agent(llm, tools=[get_weather])
    state = mode.invoke(agent, {"messages": [HumanMessage("Weather in Paris?")]})
    assert state["messages"][2].content == "It is sunny in Paris."
    assert state["messages"][-1].content == "Sunny in Paris."
    final = endpoint.emulator.requests[-1].json
    if endpoint.kind == "rejected":
        # The history carries the call as the JSON text the model was asked to write.
        assert "tools" not in final
        assert final["messages"][-2]["content"] == (
            '{"name": "get_weather", "parameters": {"city": "Paris"}}'
        )
        assert final["messages"][-1]["content"] == '{"output": "It is sunny in Paris."}'
    else:
        assert final["messages"][-2]["tool_calls"][0]["function"]["name"] == "get_weather"


class City(BaseModel):
    """A city."""

    name: str
    country: str


@pytest.mark.parametrize("rejections", [0, 1, 2], ids=["response_format", "guided_json", "prompt"])
def test_structured_output_on_every_endpoint(
    llm: ChatTIRLlama, emulator: Emulator, mode: Mode, rejections: int
) -> None:
    emulator.reject_response_format = rejections >= 1
    emulator.reject_guided_json = rejections >= 2
    if rejections == 2:
        emulator.queue(Reply(text='{"name": "Pune", "country": "India"}'))
    city = mode.invoke(llm.with_structured_output(City), "A city in India")
    expected = "Pune" if rejections == 2 else "emulated"
    assert isinstance(city, City)
    assert city.name == expected


def test_non_ascii_arguments_on_every_endpoint_kind(
    llm: ChatTIRLlama, endpoint: ToolEndpoint, mode: Mode
) -> None:
    bound = llm.bind_tools([get_weather])
    wanted = ToolEndpoint.NON_ASCII
    endpoint.emulator.queue(*[endpoint.call("get_weather", wanted)] * 2)
    (tool_call,) = mode.invoke(bound, "Weather in Pune?").tool_calls
    assert (tool_call["name"], tool_call["args"]) == ("get_weather", wanted)
    chunks = mode.stream(bound, "Weather in Pune?")
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    assert isinstance(full, AIMessageChunk)
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [("get_weather", wanted)]
