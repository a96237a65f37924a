"""ChatTIRLlama against a real vLLM: LCEL, tools, structured output, a LangGraph agent."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import pytest
from langchain_core.exceptions import ContextOverflowError
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from langchain_tir import ChatTIRLlama
from tests.vllm.conftest import Engine
from tir_transport import ContextLengthExceededError, track_usage

pytestmark = pytest.mark.vllm

KEY = "vllm-local"


@pytest.fixture
def llm(vllm_chat: Engine) -> ChatTIRLlama:
    return ChatTIRLlama(
        api_key=KEY, base_url=vllm_chat.base_url, max_tokens=16, temperature=0, timeout=120
    )


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"Sunny and 24 degrees in {city}"


class City(BaseModel):
    """A city and its country."""

    name: str
    country: str


def merged(chunks: list[Any]) -> AIMessageChunk:
    total: AIMessageChunk = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


def test_invoke(llm: ChatTIRLlama) -> None:
    message = llm.invoke("What is the capital of France?")
    assert isinstance(message, AIMessage)
    assert "Paris" in message.text
    assert message.response_metadata["finish_reason"] in ("stop", "length")
    assert message.response_metadata["model_name"] == "llama3_1_8b_instruct"
    assert message.usage_metadata is not None
    assert 0 < message.usage_metadata["output_tokens"] <= 16


def test_stream_usage_once(llm: ChatTIRLlama) -> None:
    with track_usage() as usage:
        chunks = list(llm.stream("Count from one to five."))
    # vLLM sends usage on one chunk of its own: exactly one chunk carries it, never twice.
    assert len([c for c in chunks if c.usage_metadata]) == 1
    full = merged(chunks)
    assert full.text
    assert full.usage_metadata is not None
    assert full.usage_metadata["total_tokens"] == usage.total_tokens > 0
    assert chunks[-1].chunk_position == "last"


def test_astream(llm: ChatTIRLlama) -> None:
    async def run() -> list[AIMessageChunk]:
        return [chunk async for chunk in llm.astream("Name a colour.")]

    chunks = asyncio.run(run())
    assert merged(chunks).text
    assert len([c for c in chunks if c.usage_metadata]) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
@pytest.mark.parametrize("choice", ["any", "get_weather"])
def test_forced_strict_tool_call(llm: ChatTIRLlama, stream: bool, choice: str) -> None:
    bound = llm.model_copy(update={"max_tokens": 40}).bind_tools(
        [get_weather], tool_choice=choice, strict=True
    )
    if stream:
        message: AIMessage = merged(list(bound.stream("What is the weather in Paris?")))
    else:
        message = bound.invoke("What is the weather in Paris?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather"
    assert set(call["args"]) == {"city"} and isinstance(call["args"]["city"], str)
    assert call["id"] and call["id"].startswith("chatcmpl-tool-")
    assert not message.text.strip()


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_required_without_strict_forces_the_name_and_sends_no_text(
    llm: ChatTIRLlama, stream: bool
) -> None:
    # Without strict, guided decoding forces the name only (SmolLM2 then writes the schema
    # itself as the arguments); parallel_tool_calls false, sent by default, keeps it to one call.
    bound = llm.model_copy(update={"max_tokens": 80}).bind_tools([get_weather], tool_choice="any")
    if stream:
        message: AIMessage = merged(list(bound.stream("What is the weather in Paris?")))
    else:
        message = bound.invoke("What is the weather in Paris?")
    assert [c["name"] for c in message.tool_calls] == ["get_weather"]
    assert '"name"' not in message.text


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output(
    llm: ChatTIRLlama, stream: bool, method: Literal["json_schema", "function_calling"]
) -> None:
    structured = llm.model_copy(update={"max_tokens": 60}).with_structured_output(
        City, method=method, strict=True
    )
    prompt = "Name a city in India."
    city = list(structured.stream(prompt))[-1] if stream else structured.invoke(prompt)
    assert isinstance(city, City)
    assert city.name and city.country


def test_json_mode(llm: ChatTIRLlama) -> None:
    structured = llm.model_copy(update={"max_tokens": 60}).with_structured_output(
        None, method="json_mode"
    )
    reply = structured.invoke("Give a JSON object with a key 'city' naming a city in India.")
    assert isinstance(reply, dict)


def test_context_overflow(llm: ChatTIRLlama) -> None:
    with pytest.raises(ContextOverflowError) as caught:
        llm.invoke("hello " * 5000)
    assert isinstance(caught.value, ContextLengthExceededError)
    assert "maximum context length is 4096 tokens" in str(caught.value)


def test_langgraph_agent_end_to_end(llm: ChatTIRLlama) -> None:
    # A LangGraph tool loop: the model's call (forced on the user's turn, strict arguments),
    # the tool run by LangGraph's ToolNode, the result sent back, the answer in words.
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    caller = llm.model_copy(update={"max_tokens": 40}).bind_tools(
        [get_weather], tool_choice="get_weather", strict=True
    )
    answerer = llm.model_copy(update={"max_tokens": 40}).bind_tools([get_weather])

    def agent(state: MessagesState) -> dict[str, Any]:
        last = state["messages"][-1]
        model = caller if isinstance(last, HumanMessage) else answerer
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([get_weather]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    app = graph.compile()
    with track_usage() as usage:
        result = app.invoke({"messages": [HumanMessage("What is the weather in Paris?")]})
    _question, call, tool_result, answer = result["messages"]
    assert isinstance(call, AIMessage) and call.tool_calls[0]["name"] == "get_weather"
    assert isinstance(tool_result, ToolMessage)
    assert tool_result.content == f"Sunny and 24 degrees in {call.tool_calls[0]['args']['city']}"
    assert tool_result.tool_call_id == call.tool_calls[0]["id"]
    assert isinstance(answer, AIMessage) and answer.text and not answer.tool_calls
    assert usage.requests == 2


def test_raw_tool_call_shape_round_trips(llm: ChatTIRLlama) -> None:
    # The assistant's tool call, as LangChain keeps it, goes back as vLLM takes it.
    bound = llm.model_copy(update={"max_tokens": 40}).bind_tools(
        [get_weather], tool_choice="get_weather", strict=True
    )
    call = bound.invoke("Weather in Pune?")
    result = ToolMessage(json.dumps({"weather": "rain"}), tool_call_id=call.tool_calls[0]["id"])
    answer = llm.invoke([HumanMessage("Weather in Pune?"), call, result])
    assert answer.text


@pytest.mark.parametrize(
    "stream",
    [pytest.param(False, id="invoke"), pytest.param(True, id="stream")],
)
def test_a_forced_call_cut_by_max_tokens_is_never_text(llm: ChatTIRLlama, stream: bool) -> None:
    bound = llm.model_copy(update={"max_tokens": 12}).bind_tools(
        [get_weather], tool_choice="get_weather"
    )
    if stream:
        message: AIMessage = merged(list(bound.stream("What is the weather in Paris?")))
    else:
        message = bound.invoke("What is the weather in Paris?")
    assert message.response_metadata["finish_reason"] == "length"
    assert '"name"' not in message.text and '"parameters"' not in message.text
    if not stream:
        # vLLM sent the cut call as text; it comes back as what ChatOpenAI makes of a call
        # OpenAI cut: an invalid tool call (here saying what to do), never a runnable one.
        assert not message.tool_calls
        (invalid,) = message.invalid_tool_calls
        assert invalid["name"] == "get_weather"
        assert "raise max_tokens" in (invalid["error"] or "")
    # Streamed, vLLM sends the call as deltas and LangChain's own merge reads the cut
    # arguments as partial JSON, as it does for ChatOpenAI: finish_reason says it was cut.
