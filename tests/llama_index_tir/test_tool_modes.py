"""TIRLlamaLLM behaves the same on every kind of endpoint: tools native, rejected, or in text."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from llama_index_tir import TIRLlamaLLM
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply, ToolEndpoint


def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"It is sunny in {city}."


WEATHER = FunctionTool.from_defaults(fn=get_weather)


@pytest.fixture(params=ToolEndpoint.KINDS)
def endpoint(request: pytest.FixtureRequest, emulator: Emulator) -> ToolEndpoint:
    return ToolEndpoint(emulator, request.param)


@pytest.fixture
def llm(emulator: Emulator) -> TIRLlamaLLM:
    return TIRLlamaLLM(api_key=TEST_KEY, base_url=emulator.base_url, timeout=5)


def test_chat_with_tools_sync_async_stream(llm: TIRLlamaLLM, endpoint: ToolEndpoint) -> None:
    endpoint.emulator.queue(*[endpoint.call("get_weather", {"city": "Paris"})] * 4)

    async def both_async() -> list[object]:
        response = await llm.achat_with_tools([WEATHER], user_msg="Weather in Paris?")
        responses = [r async for r in await llm.astream_chat_with_tools([WEATHER], user_msg="?")]
        return [response, responses[-1]]

    responses = [
        llm.chat_with_tools([WEATHER], user_msg="Weather in Paris?"),
        list(llm.stream_chat_with_tools([WEATHER], user_msg="Weather in Paris?"))[-1],
        *asyncio.run(both_async()),
    ]
    for response in responses:
        (selection,) = llm.get_tool_calls_from_response(response)  # type: ignore[arg-type]
        assert (selection.tool_name, selection.tool_kwargs) == ("get_weather", {"city": "Paris"})
        assert selection.tool_id
    assert endpoint.tools_were_native() is (endpoint.kind != "rejected")


@pytest.mark.parametrize("streaming", [False, True], ids=["chat", "stream"])
def test_function_agent_finishes_a_tool_loop(
    llm: TIRLlamaLLM, endpoint: ToolEndpoint, streaming: bool
) -> None:
    endpoint.emulator.queue(
        endpoint.call("get_weather", {"city": "Paris"}), Reply(text="Sunny in Paris.")
    )
    agent = FunctionAgent(tools=[WEATHER], llm=llm, streaming=streaming)

    async def run() -> str:
        return str(await agent.run("Weather in Paris?"))

    assert asyncio.run(run()) == "Sunny in Paris."
    final = endpoint.emulator.requests[-1].json
    if endpoint.kind == "rejected":
        assert "tools" not in final
        assert final["messages"][-1]["content"] == '{"output": "It is sunny in Paris."}'
    else:
        assert final["messages"][-1]["role"] == "tool"


class City(BaseModel):
    """A city."""

    name: str
    country: str


def test_structured_predict_on_every_endpoint(llm: TIRLlamaLLM, endpoint: ToolEndpoint) -> None:
    endpoint.emulator.queue(endpoint.call("City", {"name": "Pune", "country": "India"}))
    city = llm.structured_predict(City, PromptTemplate("A city in {country}"), country="India")
    assert city == City(name="Pune", country="India")


def test_non_ascii_arguments_on_every_endpoint_kind(
    llm: TIRLlamaLLM, endpoint: ToolEndpoint
) -> None:
    wanted = ToolEndpoint.NON_ASCII
    endpoint.emulator.queue(*[endpoint.call("get_weather", wanted)] * 2)
    responses = [
        llm.chat_with_tools([WEATHER], user_msg="Weather in Pune?"),
        list(llm.stream_chat_with_tools([WEATHER], user_msg="Weather in Pune?"))[-1],
    ]
    for response in responses:
        (selection,) = llm.get_tool_calls_from_response(response)
        assert (selection.tool_name, selection.tool_kwargs) == ("get_weather", wanted)
