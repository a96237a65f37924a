"""Where ChatOpenAI gets a corner right, ChatTIRLlama does too (each reproduced, then fixed)."""

from __future__ import annotations

import asyncio
import json
import warnings
from typing import Any

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessageChunk, HumanMessage
from pydantic import BaseModel, ValidationError

from langchain_tir import ChatTIRLlama
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply
from tests.support.runnables import Mode
from tir_transport import APITimeoutError


class City(BaseModel):
    name: str
    country: str


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> Mode:
    return Mode(request.param)


def make(emulator: Emulator, **kwargs: Any) -> ChatTIRLlama:
    return ChatTIRLlama(api_key=TEST_KEY, base_url=emulator.base_url, timeout=5, **kwargs)


# What llama.cpp answered when it ignored the schema: a code block, not the object.
IGNORED = '```python\ncity = "Paris"\n```'
PARIS = '{"name": "Paris", "country": "France"}'


# -- structured output: a stream gives the object, or raises -----------------------------------


def test_stream_first_on_an_endpoint_that_ignores_the_schema(
    emulator: Emulator, mode: Mode
) -> None:
    # response_format is refused; guided_json is accepted and ignored (the reply is fenced
    # text), as llama.cpp's server does. The stream, the first call on this endpoint, must
    # fall back exactly as invoke does, and give the object.
    emulator.reject_response_format = True
    emulator.queue(Reply(text=IGNORED), Reply(text=PARIS))  # guided_json ignored; JSON mode
    structured = make(emulator).with_structured_output(City)
    parsed = mode.stream(structured, "A city in France?")
    assert parsed and parsed[-1] == City(name="Paris", country="France")
    bodies = [r.json for r in emulator.requests]
    assert "response_format" in bodies[0] and "guided_json" in bodies[1]
    assert bodies[2]["response_format"]["type"] == "json_object"  # JSON mode with the schema


def test_include_raw_stream_has_the_parsed_key(emulator: Emulator, mode: Mode) -> None:
    emulator.reject_response_format = True
    emulator.queue(Reply(text=IGNORED), Reply(text=PARIS))
    structured = make(emulator).with_structured_output(City, include_raw=True)
    chunks = mode.stream(structured, "A city in France?")
    merged: dict[str, Any] = {}
    for chunk in chunks:
        merged.update({k: v for k, v in chunk.items() if v is not None})
    assert merged["parsed"] == City(name="Paris", country="France")


def test_a_stream_that_never_parses_raises(emulator: Emulator, mode: Mode) -> None:
    # A server that takes response_format and ignores it (the native level is not checked):
    # the stream must not end with nothing.
    emulator.queue(Reply(text="I would rather not answer in JSON."))
    structured = make(emulator).with_structured_output(City)
    with pytest.raises(OutputParserException):
        mode.stream(structured, "A city?")
    emulator.queue(Reply(text="I would rather not answer in JSON."))
    with pytest.raises(OutputParserException):
        mode.invoke(structured, "A city?")


def test_json_mode_without_a_schema_returns_a_dict(emulator: Emulator, mode: Mode) -> None:
    emulator.queue(Reply(text='{"a": 1}'), Reply(text='{"a": 1}'))
    structured = make(emulator).with_structured_output(None, method="json_mode")
    assert mode.invoke(structured, "JSON please") == {"a": 1}
    assert mode.stream(structured, "JSON please")[-1] == {"a": 1}
    assert emulator.requests[0].json["response_format"] == {"type": "json_object"}


# -- tool names repeated in every delta (llama.cpp) ---------------------------------------------


def test_repeated_tool_names_are_merged_once(emulator: Emulator, mode: Mode) -> None:
    call = {"id": "call-7", "name": "get_weather", "arguments": json.dumps({"city": "Pune"})}
    emulator.queue(Reply(tool_calls=[call], repeat_tool_names=True))
    llm = make(emulator).bind_tools([{"type": "function", "function": {"name": "get_weather"}}])
    chunks = mode.stream(llm, "Weather in Pune?")
    merged: AIMessageChunk = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert merged.tool_calls == [
        {"name": "get_weather", "args": {"city": "Pune"}, "id": "call-7", "type": "tool_call"}
    ]


def test_function_calling_stream_with_repeated_names(emulator: Emulator, mode: Mode) -> None:
    call = {"id": "c1", "name": "City", "arguments": '{"name": "Pune", "country": "India"}'}
    emulator.queue(Reply(tool_calls=[call], repeat_tool_names=True))
    structured = make(emulator).with_structured_output(City, method="function_calling")
    assert mode.stream(structured, "A city?")[-1] == City(name="Pune", country="India")


# -- constructor arguments: none vanish ---------------------------------------------------------


def test_unknown_arguments_become_request_fields_with_a_warning(emulator: Emulator) -> None:
    with pytest.warns(UserWarning) as caught:
        llm = make(emulator, top_k=5, repetition_penalty=1.1)
    named = sorted(str(w.message).split("'")[1] for w in caught)
    assert named == ["repetition_penalty", "top_k"]
    assert all("is not an argument of ChatTIRLlama" in str(w.message) for w in caught)
    assert llm.model_kwargs == {"top_k": 5, "repetition_penalty": 1.1}
    llm.invoke("hi")
    body = emulator.requests[0].json
    assert (body["top_k"], body["repetition_penalty"]) == (5, 1.1)


def test_chatopenais_own_fields_are_arguments_without_a_warning(emulator: Emulator) -> None:
    # Fields ChatOpenAI declares: a program passing them is not warned on every start.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        llm = make(emulator, logprobs=True, top_logprobs=2, n=1)
    llm.invoke("hi")
    body = emulator.requests[0].json
    assert (body["logprobs"], body["top_logprobs"], body.get("n")) == (True, 2, None)


def test_request_timeout_is_the_timeout(emulator: Emulator) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        llm = ChatTIRLlama(api_key=TEST_KEY, base_url=emulator.base_url, request_timeout=0.3)
    assert llm.timeout == 0.3
    emulator.queue(Reply(delay=2.0), Reply(delay=2.0), Reply(delay=2.0))
    with pytest.raises(APITimeoutError):
        llm.invoke("hi")


def test_a_misspelt_field_is_an_error() -> None:
    with pytest.raises(
        ValidationError, match="no argument 'temprature': did you mean 'temperature'"
    ):
        ChatTIRLlama(temprature=0)


def test_model_kwargs_may_not_override_a_field(emulator: Emulator) -> None:
    with pytest.raises(ValidationError, match="'temperature' is given twice"):
        make(emulator, temperature=0.1, model_kwargs={"temperature": 0.9})
    # Given only in model_kwargs, it is the field (validated, sent once).
    llm = make(emulator, model_kwargs={"temperature": 0.9})
    assert llm.temperature == 0.9 and llm.model_kwargs == {}


def test_several_choices_are_refused_before_any_request(emulator: Emulator, mode: Mode) -> None:
    with pytest.raises(ValidationError, match="n=2 is not supported"):
        make(emulator, n=2)
    with pytest.raises(ValidationError, match="n=3 is not supported"):
        make(emulator, model_kwargs={"n": 3})
    llm = make(emulator)
    with pytest.raises(ValueError, match="n=2 is not supported"):
        mode.invoke(llm, "hi", n=2)
    with pytest.raises(ValueError, match="n=4 is not supported"):
        mode.invoke(llm, "hi", extra_body={"n": 4})
    assert emulator.requests == []
    mode.invoke(llm, "hi", n=1)  # one choice is what a call returns anyway
    assert len(emulator.requests) == 1


# -- generate(): llm_output --------------------------------------------------------------------


def test_generate_carries_usage_and_model(emulator: Emulator) -> None:
    llm = make(emulator, max_tokens=3)
    result = llm.generate([[HumanMessage("hello there")], [HumanMessage("one two three")]])
    # OpenAI's names, as ChatOpenAI's llm_output has them.
    assert result.llm_output == {
        "model_name": "llama3_1_8b_instruct",
        "token_usage": {"prompt_tokens": 6 + 7, "completion_tokens": 6, "total_tokens": 19},
    }
    again = asyncio.run(llm.agenerate([[HumanMessage("hello there")]])).llm_output
    assert again is not None and again["token_usage"]["prompt_tokens"] == 6


# -- a short key does not mangle what the server says -------------------------------------------


def test_a_short_key_does_not_stop_the_tool_fallback(emulator: Emulator) -> None:
    emulator.reject_tools = True  # the 400 names "tool", which holds the key "t"
    llm = ChatTIRLlama(api_key="t", base_url=emulator.base_url)
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {}}}]
    emulator.queue(Reply(text='{"name": "get_time", "parameters": {}}'))
    reply = llm.bind_tools(tools).invoke("What time is it?")
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "get_time"
    assert "tools" not in emulator.requests[-1].json  # sent again, tools in the prompt
