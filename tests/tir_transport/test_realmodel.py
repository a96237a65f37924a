"""The core against a real model server nobody here wrote: llama.cpp with SmolLM2-135M."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Caller
from tir_transport import (
    ChatClient,
    ContextLengthExceededError,
    TIRConfig,
    ToolCallAccumulator,
    build_payload,
    track_usage,
)

pytestmark = pytest.mark.realmodel

MODEL = "SmolLM2-135M-Instruct"


def client(base_url: str) -> ChatClient:
    # llama.cpp ignores the key and the project query, as a local server should.
    return ChatClient(TIRConfig.from_env(api_key="local", base_url=base_url, timeout=60))


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_create(local_model: str, call: Caller) -> None:
    with track_usage() as usage:
        completion = call.create(
            client(local_model),
            build_payload(messages("Say hello."), MODEL, max_tokens=8, temperature=0, seed=1),
        )
    assert completion.text
    assert completion.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert completion.usage.output_tokens <= 8
    assert usage.requests == 1
    assert usage.total_tokens == completion.usage.total_tokens


def test_stream(local_model: str, call: Caller) -> None:
    with track_usage() as usage:
        chunks = call.stream(
            client(local_model),
            build_payload(messages("Count: one, two,"), MODEL, stream=True, max_tokens=8),
        )
    assert "".join(c.text or "" for c in chunks)
    assert chunks[-1].finish_reason in ("stop", "length")
    # llama.cpp ignores stream_options.include_usage: no usage, and none invented.
    assert all(c.usage is None for c in chunks)
    assert usage.requests == 1
    assert usage.total_tokens == 0


def test_forced_tool_call(local_model: str, call: Caller) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    body = build_payload(
        messages("What is the weather in Paris?"),
        MODEL,
        stream=True,
        max_tokens=40,
        temperature=0,
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    acc = ToolCallAccumulator()
    for chunk in call.stream(client(local_model), body):
        acc.add(chunk.tool_calls)
    (tool_call,) = acc.result()
    assert tool_call.name == "get_weather"
    # Greedy decoding held to the tool's schema: SmolLM2 names the city it was asked about.
    assert json.loads(tool_call.arguments) == {"city": "Paris"}


def test_context_overflow(local_model: str, call: Caller) -> None:
    body = build_payload(messages("word " * 6000), MODEL, max_tokens=8)
    with pytest.raises(ContextLengthExceededError, match="maximum context length"):
        call.create(client(local_model), body)
