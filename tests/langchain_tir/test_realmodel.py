"""ChatTIRLlama against a real llama.cpp server (SmolLM2-135M-Instruct) on loopback."""

from __future__ import annotations

import asyncio
import logging

import pytest
from langchain_core.exceptions import ContextOverflowError
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel

from langchain_tir import ChatTIRLlama
from tir_transport import ContextLengthExceededError

pytestmark = pytest.mark.realmodel


@pytest.fixture
def llm(local_model: str) -> ChatTIRLlama:
    # llama.cpp ignores the key; the model name is only echoed back.
    return ChatTIRLlama(
        api_key="local",
        base_url=local_model,
        model="SmolLM2-135M-Instruct",
        max_tokens=16,
        temperature=0,
        seed=1,
    )


def test_invoke(llm: ChatTIRLlama) -> None:
    message = llm.invoke("Say hello.")
    assert isinstance(message, AIMessage)
    assert message.text
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] <= 16
    assert message.response_metadata["finish_reason"] in ("stop", "length")


def test_stream(llm: ChatTIRLlama) -> None:
    chunks = list(llm.stream("Count from one to five."))
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    assert isinstance(full, AIMessageChunk)
    assert full.text
    assert chunks[-1].chunk_position == "last"
    # llama.cpp sends no usage when streaming: none is invented.
    assert full.usage_metadata is None


def test_astream_chain(llm: ChatTIRLlama) -> None:
    chain = (
        ChatPromptTemplate.from_messages([("human", "Name a {thing}.")]) | llm | StrOutputParser()
    )

    async def run() -> str:
        return "".join([part async for part in chain.astream({"thing": "colour"})])

    assert asyncio.run(run())


def test_forced_tool_call(llm: ChatTIRLlama) -> None:
    @tool
    def get_weather(city: str) -> str:
        """Get the weather for a city."""
        return "sunny"

    bound = llm.model_copy(update={"max_tokens": 40}).bind_tools(
        [get_weather], tool_choice="get_weather"
    )
    message = bound.invoke("What is the weather in Paris?")
    assert isinstance(message, AIMessage)
    (call,) = message.tool_calls
    assert call["name"] == "get_weather"
    # Greedy decoding held to the tool's schema: SmolLM2 names the city it was asked about.
    assert call["args"] == {"city": "Paris"}


def test_context_overflow(llm: ChatTIRLlama) -> None:
    with pytest.raises(ContextOverflowError) as info:
        llm.invoke("word " * 6000)
    assert isinstance(info.value, ContextLengthExceededError)
    assert "maximum context length" in str(info.value)


class City(BaseModel):
    """A city and its country."""

    name: str
    country: str


def test_structured_output_falls_back_to_what_llama_cpp_takes(
    llm: ChatTIRLlama, caplog: pytest.LogCaptureFixture
) -> None:
    # llama.cpp answers response_format json_schema with a 500 validation error and ignores
    # guided_json; its JSON mode with a schema is what holds the reply to the schema.
    structured = llm.model_copy(update={"max_tokens": 60}).with_structured_output(City)
    with caplog.at_level(logging.INFO, logger="tir_transport"):
        city = structured.invoke("Name a city in India, as JSON with keys name and country.")
    assert isinstance(city, City)
    assert city.name and city.country
    fallbacks = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert len(fallbacks) == 2
    assert "guided_json" in fallbacks[0]
    assert "JSON mode" in fallbacks[1]


def test_structured_output_stream_first_falls_back_as_invoke_does(llm: ChatTIRLlama) -> None:
    # The first call on this endpoint is a stream: it must detect that llama.cpp ignored the
    # schema, fall back, and give the object (it used to give [] without an error).
    structured = llm.model_copy(update={"max_tokens": 60}).with_structured_output(City)
    parsed = list(structured.stream("Name a city in India, as JSON with keys name and country."))
    assert parsed and isinstance(parsed[-1], City)
    assert parsed[-1].name and parsed[-1].country


def test_function_calling_stream_with_llama_cpp_deltas(llm: ChatTIRLlama) -> None:
    # llama.cpp repeats the tool's name in every delta; merged, it must read once.
    structured = llm.model_copy(update={"max_tokens": 60}).with_structured_output(
        City, method="function_calling"
    )
    parsed = list(structured.stream("Name a city in India."))
    assert parsed and isinstance(parsed[-1], City)
    bound = llm.model_copy(update={"max_tokens": 60}).bind_tools([City], tool_choice="City")
    merged: AIMessageChunk | None = None
    for chunk in bound.stream("Name a city in India."):
        merged = chunk if merged is None else merged + chunk  # type: ignore[assignment]
    assert merged is not None and [c["name"] for c in merged.tool_calls] == ["City"]
