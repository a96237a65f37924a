"""ChatTIRLlama against the emulator over real sockets; each behaviour sync and async."""

from __future__ import annotations

import asyncio
import json
import pickle
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler, get_usage_metadata_callback
from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelRateLimitError,
)
from langchain_core.load import dumpd, dumps, load
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_json_schema
from pydantic import BaseModel, Field

from langchain_tir import ChatTIRLlama, UnsupportedContentError
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply
from tests.support.runnables import Mode
from tir_transport import (
    AuthenticationError,
    ConfigurationError,
    ContextLengthExceededError,
    RateLimitError,
    StreamInterruptedError,
    track_usage,
)

SEED_TEXT = "Hello. How can I assist you today?"


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> Mode:
    return Mode(request.param)


@pytest.fixture
def llm(emulator: Emulator) -> ChatTIRLlama:
    return ChatTIRLlama(api_key=TEST_KEY, project_id="1234", base_url=emulator.base_url, timeout=5)


def merged(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    return full


def weather_reply(arguments: str = '{"city": "Paris"}') -> Reply:
    return Reply(tool_calls=[{"id": "call-1", "name": "get_weather", "arguments": arguments}])


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"It is sunny in {city}."


# -- construction and configuration ------------------------------------------------------------


def test_construction_needs_no_key_and_does_no_io(emulator: Emulator) -> None:
    llm = ChatTIRLlama(base_url=emulator.base_url)
    assert llm.api_key is None
    assert emulator.requests == []
    with pytest.raises(ConfigurationError, match="TIR_API_KEY"):
        llm.invoke("hi")
    assert emulator.requests == []


def test_model_name_alias() -> None:
    assert ChatTIRLlama(model_name="x").model == "x"
    assert ChatTIRLlama(model="y").model == "y"
    assert ChatTIRLlama().model == "llama3_1_8b_instruct"


def test_missing_project_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="TIR_PROJECT_ID"):
        ChatTIRLlama(api_key=TEST_KEY).invoke("hi")


def test_genai_url_and_environment(
    emulator: Emulator, mode: Mode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_TIR_ACCESS_TOKEN", "sdk-token")
    monkeypatch.setenv("E2E_TIR_PROJECT_ID", "p-88")
    monkeypatch.setenv("TIR_HOST", emulator.url)
    mode.invoke(ChatTIRLlama(), "hi")
    (request,) = emulator.requests
    assert request.path == "/project/p-88/genai/llama3_1_8b_instruct/v1/chat/completions"
    assert request.query == {"project_id": ["88"]}
    assert request.headers["authorization"] == "Bearer sdk-token"
    assert request.json["model"] == "llama3_1_8b_instruct"


def test_endpoint_url(emulator: Emulator, mode: Mode) -> None:
    llm = ChatTIRLlama(api_key=TEST_KEY, project_id="5", host=emulator.url, endpoint_id="77")
    mode.stream(llm, "hi")
    assert emulator.requests[0].path == "/project/p-5/endpoint/is-77/v1/chat/completions"


def test_every_field_reaches_the_wire(emulator: Emulator, mode: Mode) -> None:
    llm = ChatTIRLlama(
        api_key=TEST_KEY,
        base_url=emulator.base_url,
        model="my_model",
        temperature=0.3,
        max_tokens=77,
        top_p=0.9,
        frequency_penalty=0.1,
        presence_penalty=0.2,
        stop=["END"],
        seed=7,
        model_kwargs={"logprobs": False},
        extra_body={"top_k": 20, "repetition_penalty": 1.05},
    )
    mode.invoke(llm, "hi")
    body = emulator.requests[0].json
    assert body == {
        "model": "my_model",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3,
        "max_tokens": 77,
        "top_p": 0.9,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.2,
        "seed": 7,
        "logprobs": False,
        "stop": ["END"],
        "top_k": 20,
        "repetition_penalty": 1.05,
    }


def test_unset_fields_are_not_sent_and_call_kwargs_override(
    llm: ChatTIRLlama, emulator: Emulator, mode: Mode
) -> None:
    mode.invoke(llm, "hi", temperature=0.9, stop=["x"], model="other")
    body = emulator.requests[0].json
    assert body == {
        "model": "other",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.9,
        "stop": ["x"],
    }


def test_stream_asks_for_usage_only_when_wanted(
    llm: ChatTIRLlama, emulator: Emulator, mode: Mode
) -> None:
    mode.stream(llm, "hi")
    mode.stream(llm.model_copy(update={"stream_usage": False}), "hi")
    first, second = (r.json for r in emulator.requests)
    assert first["stream"] is True
    assert first["stream_options"] == {"include_usage": True}
    assert "stream_options" not in second


# -- replies ------------------------------------------------------------------------------------


def test_invoke(llm: ChatTIRLlama, mode: Mode) -> None:
    message = mode.invoke(llm, "hi")
    assert isinstance(message, AIMessage)
    assert message.content == SEED_TEXT
    assert message.usage_metadata == {
        "input_tokens": 5,
        "output_tokens": 9,
        "total_tokens": 14,
        "input_token_details": {},
        "output_token_details": {},
    }
    assert message.response_metadata["model_name"] == "llama3_1_8b_instruct"
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.response_metadata["model_provider"] == "tir"
    assert message.id and message.id.startswith("chat-")


def test_stream_metadata_once(llm: ChatTIRLlama, mode: Mode) -> None:
    chunks = mode.stream(llm, "hi")
    assert "".join(c.text for c in chunks) == SEED_TEXT
    with_usage = [c for c in chunks if c.usage_metadata]
    assert len(with_usage) == 1
    assert [c for c in chunks if "finish_reason" in c.response_metadata] == with_usage
    assert [c for c in chunks if "model_name" in c.response_metadata] == with_usage
    assert chunks[-1].chunk_position == "last"
    assert all(c.chunk_position != "last" for c in chunks[:-1])
    full = merged(chunks)
    assert full.content == SEED_TEXT
    assert full.usage_metadata == {
        "input_tokens": 5,
        "output_tokens": 9,
        "total_tokens": 14,
        "input_token_details": {},
        "output_token_details": {},
    }
    assert full.response_metadata["model_name"] == "llama3_1_8b_instruct"
    assert full.response_metadata["finish_reason"] == "stop"
    assert full.response_metadata["model_provider"] == "tir"
    assert full.id == "chat-b3b5ae1d266c428f894f05e33a39ea5b"


def test_stream_without_server_usage_invents_none(
    llm: ChatTIRLlama, emulator: Emulator, mode: Mode
) -> None:
    chunks = mode.stream(llm.model_copy(update={"stream_usage": False}), "hi")
    assert all(c.usage_metadata is None for c in chunks)
    assert merged(chunks).usage_metadata is None


def test_stop_sequence_and_stop_reason(llm: ChatTIRLlama, mode: Mode) -> None:
    message = mode.invoke(llm, "hi", stop=["you"])
    assert message.content == "Hello. How can I assist "
    assert message.response_metadata["stop_reason"] == "you"
    full = merged(mode.stream(llm, "hi", stop=["you"]))
    assert full.content == "Hello. How can I assist "
    assert full.response_metadata["finish_reason"] == "stop"


def test_streaming_flag_streams_invoke_and_feeds_callbacks(emulator: Emulator, mode: Mode) -> None:
    tokens: list[str] = []

    class Collect(BaseCallbackHandler):
        def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
            tokens.append(token)

    llm = ChatTIRLlama(api_key=TEST_KEY, base_url=emulator.base_url, streaming=True)
    message = mode.invoke(llm, "hi", config={"callbacks": [Collect()]})
    assert message.content == SEED_TEXT
    assert emulator.requests[0].json["stream"] is True
    assert "".join(tokens) == SEED_TEXT
    assert message.usage_metadata is not None


def test_message_history_on_the_wire(llm: ChatTIRLlama, emulator: Emulator, mode: Mode) -> None:
    history: list[BaseMessage] = [
        SystemMessage("be brief"),
        HumanMessage("weather in Paris?", name="alice"),
        AIMessage(
            "",
            tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}],
        ),
        ToolMessage("sunny", tool_call_id="c1"),
        AIMessage([{"type": "text", "text": "It is "}, {"type": "text", "text": "sunny."}]),
        HumanMessage([{"type": "text", "text": "thanks"}]),
    ]
    mode.invoke(llm, history)
    assert emulator.requests[0].json["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather in Paris?", "name": "alice"},
        {
            # "" rather than null: llama.cpp's server rejects a null content.
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        # Text parts joined by "\n", as vLLM joins them when ChatOpenAI sends the list.
        {"role": "assistant", "content": "It is \nsunny."},
        {"role": "user", "content": "thanks"},
    ]


# -- tools ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        (None, None),
        ("auto", "auto"),
        ("none", "none"),
        ("any", "required"),
        ("required", "required"),
        (True, "required"),
        ("get_weather", {"type": "function", "function": {"name": "get_weather"}}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
)
def test_tool_choice_on_the_wire(
    llm: ChatTIRLlama, emulator: Emulator, choice: Any, wire: Any
) -> None:
    emulator.queue(weather_reply())
    llm.bind_tools([get_weather], tool_choice=choice).invoke("weather?")
    body = emulator.requests[0].json
    assert body.get("tool_choice") == wire
    assert body["parallel_tool_calls"] is False
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["tools"][0]["function"]["parameters"]["required"] == ["city"]
    # A forced call is sent strict (vLLM then holds its arguments to the schema, not only
    # its name); a free one is not, as ChatOpenAI sends none unless asked.
    forced = wire not in (None, "auto", "none")
    assert body["tools"][0]["function"].get("strict") is (True if forced else None)


def search(query: str, limit: int | None = None, units: str = "metric") -> str:
    """Search the handbook.

    Args:
        query: what to look for.
        limit: how many results.
        units: the units of the numbers in them.
    """
    return query


@pytest.mark.parametrize("strict", [None, True])
def test_a_forced_call_keeps_the_tools_defaults(
    llm: ChatTIRLlama, emulator: Emulator, strict: bool | None
) -> None:
    # Sent strict by itself (vLLM then guides the arguments by the schema), a forced call
    # keeps the tool's own schema: LangChain's strict form made `limit` and `units` required
    # too, and the model had to invent values the tool has defaults for. Asked for strict,
    # the caller gets LangChain's (OpenAI's) strict form, as ChatOpenAI sends it.
    emulator.queue(Reply(tool_calls=[{"id": "c", "name": "search", "arguments": "{}"}]))
    llm.bind_tools([search], tool_choice="search", strict=strict).invoke("find it")
    function = emulator.requests[0].json["tools"][0]["function"]
    assert function["strict"] is True
    wanted = ["query"] if strict is None else ["query", "limit", "units"]
    assert function["parameters"]["required"] == wanted


def test_strict_false_is_never_sent_strict(llm: ChatTIRLlama, emulator: Emulator) -> None:
    emulator.queue(weather_reply())
    llm.bind_tools([get_weather], tool_choice="any", strict=False).invoke("weather?")
    assert not emulator.requests[0].json["tools"][0]["function"].get("strict")


def test_a_forced_call_cut_by_max_tokens_is_an_invalid_call_saying_so(
    llm: ChatTIRLlama, emulator: Emulator
) -> None:
    # vLLM 0.32 sends a forced call that max_tokens cut as text, finish_reason length; it
    # comes back as what ChatOpenAI makes of a call OpenAI cut (an invalid tool call), with
    # an error that says what to do, and never as the message's text.
    emulator.queue(Reply(text='{"name": "get_weather", "parameters": {"ci', finish_reason="length"))
    message = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("weather?")
    assert message.text == "" and not message.tool_calls
    (invalid,) = message.invalid_tool_calls
    assert (invalid["name"], invalid["args"]) == ("get_weather", '{"ci')
    assert "max_tokens cut the call" in (invalid["error"] or "")
    assert message.response_metadata["finish_reason"] == "length"


def test_tool_choice_must_name_a_bound_tool(llm: ChatTIRLlama) -> None:
    with pytest.raises(ValueError, match="not among the bound tools"):
        llm.bind_tools([get_weather], tool_choice="nope")
    with pytest.raises(ValueError, match="tool_choice must be"):
        llm.bind_tools([get_weather], tool_choice=3)  # type: ignore[arg-type]


def test_tool_call_invoke_and_stream(llm: ChatTIRLlama, emulator: Emulator, mode: Mode) -> None:
    bound = llm.bind_tools([get_weather])
    emulator.queue(weather_reply(), weather_reply())
    message = mode.invoke(bound, "weather in Paris?")
    assert message.tool_calls == [
        {"name": "get_weather", "args": {"city": "Paris"}, "id": "call-1", "type": "tool_call"}
    ]
    assert message.response_metadata["finish_reason"] == "tool_calls"
    chunks = mode.stream(bound, "weather in Paris?")
    assert any(c.tool_call_chunks for c in chunks)
    full = merged(chunks)
    assert full.tool_calls == message.tool_calls
    assert full.response_metadata["finish_reason"] == "tool_calls"


def test_malformed_tool_arguments_are_invalid_tool_calls(
    llm: ChatTIRLlama, emulator: Emulator, mode: Mode
) -> None:
    bound = llm.bind_tools([get_weather])
    emulator.queue(weather_reply('{"city": "Par'), weather_reply('{"city": "Par'))
    message = mode.invoke(bound, "weather?")
    assert message.tool_calls == []
    (invalid,) = message.invalid_tool_calls
    assert invalid["name"] == "get_weather"
    assert invalid["args"] == '{"city": "Par'
    assert "not valid JSON" in (invalid["error"] or "")
    # Streamed, the chunks carry the exact text; adding them up is LangChain's own merge,
    # which reads partial JSON leniently (a known limit, noted in the docs).
    chunks = mode.stream(bound, "weather?")
    raw = "".join(c["args"] or "" for chunk in chunks for c in chunk.tool_call_chunks)
    assert raw == '{"city": "Par'


def test_empty_arguments_mean_no_arguments(llm: ChatTIRLlama, emulator: Emulator) -> None:
    emulator.queue(Reply(tool_calls=[{"id": "c", "name": "get_weather", "arguments": ""}]))
    assert llm.invoke("x").tool_calls[0]["args"] == {}


# -- structured output ------------------------------------------------------------------------


class Joke(BaseModel):
    """A joke."""

    setup: str = Field(description="the question")
    punchline: str = Field(description="the answer")


JOKE = '{"setup": "Why?", "punchline": "Because."}'


def test_structured_output_json_schema(llm: ChatTIRLlama, emulator: Emulator, mode: Mode) -> None:
    emulator.queue(Reply(text=JOKE))
    joke = mode.invoke(llm.with_structured_output(Joke), "a joke")
    assert joke == Joke(setup="Why?", punchline="Because.")
    response_format = emulator.requests[0].json["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Joke"
    assert response_format["json_schema"]["schema"]["required"] == ["setup", "punchline"]
    assert "tools" not in emulator.requests[0].json


def test_structured_output_function_calling(
    llm: ChatTIRLlama, emulator: Emulator, mode: Mode
) -> None:
    emulator.queue(Reply(tool_calls=[{"name": "Joke", "arguments": JOKE}]))
    joke = mode.invoke(llm.with_structured_output(Joke, method="function_calling"), "a joke")
    assert joke == Joke(setup="Why?", punchline="Because.")
    body = emulator.requests[0].json
    assert body["tool_choice"] == {"type": "function", "function": {"name": "Joke"}}
    assert "ls_structured_output_format" not in body


def test_structured_output_json_mode_dict_schema(
    llm: ChatTIRLlama, emulator: Emulator, mode: Mode
) -> None:
    emulator.queue(Reply(text=JOKE))
    result = mode.invoke(
        llm.with_structured_output(Joke.model_json_schema(), method="json_mode"), "a joke"
    )
    assert result == {"setup": "Why?", "punchline": "Because."}
    assert emulator.requests[0].json["response_format"] == {"type": "json_object"}


def test_structured_output_streams_partial_dicts(
    llm: ChatTIRLlama, emulator: Emulator, mode: Mode
) -> None:
    emulator.queue(Reply(pieces=['{"setup": "Wh', 'y?", "punch', 'line": "Because."}']))
    parts = mode.stream(llm.with_structured_output(Joke.model_json_schema()), "a joke")
    assert len(parts) > 1
    assert parts[-1] == {"setup": "Why?", "punchline": "Because."}


def test_structured_output_include_raw(llm: ChatTIRLlama, emulator: Emulator) -> None:
    emulator.queue(Reply(text="not json"))
    result = llm.with_structured_output(Joke, include_raw=True).invoke("a joke")
    assert isinstance(result, dict)
    assert result["parsed"] is None
    assert result["parsing_error"] is not None
    assert result["raw"].content == "not json"


def test_structured_output_records_the_schema_for_tracing(llm: ChatTIRLlama) -> None:
    seen: list[Any] = []

    class Options(BaseCallbackHandler):
        def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            seen.append(kwargs)

    llm.with_structured_output(Joke, method="function_calling").invoke(
        "a joke", config={"callbacks": [Options()]}
    )
    (start,) = seen
    recorded = start["options"]["ls_structured_output_format"]
    assert recorded["schema"] == convert_to_json_schema(Joke)
    assert recorded["kwargs"] == {"method": "function_calling", "strict": None}
    # It is tracing metadata, never a request field.
    assert "ls_structured_output_format" not in start["invocation_params"]


def test_bad_structured_output_method(llm: ChatTIRLlama) -> None:
    with pytest.raises(ValueError, match="method must be"):
        llm.with_structured_output(Joke, method="xml")  # type: ignore[arg-type]


# -- errors -----------------------------------------------------------------------------------


def test_errors_are_also_langchain_errors(
    llm: ChatTIRLlama, emulator: Emulator, mode: Mode
) -> None:
    emulator.queue(*[Reply(status=429, message="slow down", headers={"retry-after": "0"})] * 3)
    with pytest.raises(RateLimitError, match="slow down") as info:
        mode.invoke(llm, "hi")
    assert isinstance(info.value, ModelRateLimitError)
    assert info.value.status_code == 429

    emulator.max_context = 3
    with pytest.raises(ContextOverflowError) as overflow:
        mode.stream(llm, "this prompt is far too long")
    assert isinstance(overflow.value, ContextLengthExceededError)
    emulator.max_context = None

    emulator.require_key = "another"
    with pytest.raises(ModelAuthenticationError) as auth:
        mode.invoke(llm, "hi")
    assert isinstance(auth.value, AuthenticationError)
    assert TEST_KEY not in str(auth.value)


def test_mid_stream_error_event(llm: ChatTIRLlama, emulator: Emulator, mode: Mode) -> None:
    emulator.queue(Reply(error_event_after=3, error_format="flat", message="engine died"))
    with pytest.raises(StreamInterruptedError, match="engine died") as info:
        mode.stream(llm, "hi")
    assert isinstance(info.value, ModelAPIError)


def test_truncated_stream_is_an_error(llm: ChatTIRLlama, emulator: Emulator, mode: Mode) -> None:
    emulator.queue(Reply(cut_after=4))
    with pytest.raises(StreamInterruptedError):
        mode.stream(llm, "hi")


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image", "base64": "AAAA", "mime_type": "image/png"},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "base64": "AAAA", "mime_type": "application/pdf"},
    ],
)
def test_media_input_is_refused_clearly(
    llm: ChatTIRLlama, emulator: Emulator, block: dict[str, Any]
) -> None:
    message = HumanMessage([{"type": "text", "text": "what is this?"}, block])
    with pytest.raises(UnsupportedContentError, match="text-only"):
        llm.invoke([message])
    assert emulator.requests == []


def test_empty_input_is_refused_clearly(llm: ChatTIRLlama, mode: Mode) -> None:
    with pytest.raises(ValueError, match="at least one message"):
        mode.invoke(llm, [])


# -- LangChain plumbing -----------------------------------------------------------------------


def test_lcel_chain(llm: ChatTIRLlama, mode: Mode) -> None:
    chain = ChatPromptTemplate.from_messages([("human", "Say {word}")]) | llm | StrOutputParser()
    assert mode.invoke(chain, {"word": "hi"}) == SEED_TEXT
    assert "".join(mode.stream(chain, {"word": "hi"})) == SEED_TEXT


def test_langgraph_agent_finishes_a_tool_loop(
    llm: ChatTIRLlama, emulator: Emulator, mode: Mode
) -> None:
    from langchain.agents import create_agent

    emulator.queue(weather_reply(), Reply(text="It is sunny in Paris."))
    agent = create_agent(llm, tools=[get_weather])
    state = mode.invoke(agent, {"messages": [HumanMessage("Weather in Paris?")]})
    messages = state["messages"]
    assert [type(m).__name__ for m in messages] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    assert messages[2].content == "It is sunny in Paris."
    assert messages[-1].content == "It is sunny in Paris."
    second = emulator.requests[1].json["messages"]
    assert second[-1] == {
        "role": "tool",
        "content": "It is sunny in Paris.",
        "tool_call_id": "call-1",
    }


@pytest.mark.timing
def test_batch_with_max_concurrency(llm: ChatTIRLlama, mode: Mode, emulator: Emulator) -> None:
    inputs: list[Any] = [f"question {i}" for i in range(6)]
    # The first two answer only together: a peak of 2 is certain when the batch allows 2.
    emulator.queue(*[Reply(hold_until_in_flight=2)] * 2, *[Reply(delay=0.02)] * 4)
    if mode.name == "sync":
        results = llm.batch(inputs, config={"max_concurrency": 2})
    else:
        results = asyncio.run(llm.abatch(inputs, config={"max_concurrency": 2}))
    assert [r.content for r in results] == [SEED_TEXT] * 6
    assert emulator.max_in_flight == 2
    asked = sorted(r.json["messages"][-1]["content"] for r in emulator.requests)
    assert asked == sorted(inputs)  # each once


def test_usage_callbacks_and_track_usage(llm: ChatTIRLlama, mode: Mode) -> None:
    with track_usage() as usage, get_usage_metadata_callback() as callback:
        mode.invoke(llm, "hi")
        mode.stream(llm, "hi")
    assert usage.requests == 2
    assert usage.total_tokens == 28
    assert callback.usage_metadata["llama3_1_8b_instruct"]["total_tokens"] == 28


def test_astream_events(llm: ChatTIRLlama) -> None:
    async def run() -> list[str]:
        return [
            e["data"]["chunk"].text
            async for e in llm.astream_events("hi", version="v2")
            if e["event"] == "on_chat_model_stream"
        ]

    assert "".join(asyncio.run(run())) == SEED_TEXT


def test_rate_limiter_and_disable_streaming(emulator: Emulator, mode: Mode) -> None:
    limiter = InMemoryRateLimiter(requests_per_second=100, check_every_n_seconds=0.01)
    llm = ChatTIRLlama(
        api_key=TEST_KEY, base_url=emulator.base_url, rate_limiter=limiter, disable_streaming=True
    )
    chunks = mode.stream(llm, "hi")
    assert "".join(c.text for c in chunks) == SEED_TEXT
    assert "stream" not in emulator.requests[0].json


def test_output_version_v1(llm: ChatTIRLlama, mode: Mode) -> None:
    message = mode.invoke(llm.model_copy(update={"output_version": "v1"}), "hi")
    assert message.content == [{"type": "text", "text": SEED_TEXT}]
    full = merged(mode.stream(llm.model_copy(update={"output_version": "v1"}), "hi"))
    assert [b["type"] for b in full.content_blocks] == ["text"]
    assert full.text == SEED_TEXT


def test_key_never_shown(llm: ChatTIRLlama) -> None:
    assert TEST_KEY not in repr(llm)
    assert TEST_KEY not in str(llm)
    assert TEST_KEY not in json.dumps(llm.model_dump(), default=str)
    assert TEST_KEY not in dumps(llm)
    assert TEST_KEY not in str(llm._identifying_params)
    assert TEST_KEY not in str(llm._get_ls_params())


@pytest.mark.filterwarnings("ignore:The function `load` is in beta")
def test_serialisation_round_trip(
    llm: ChatTIRLlama, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    serialised = dumpd(llm)
    assert serialised["kwargs"]["api_key"] == {"lc": 1, "type": "secret", "id": ["TIR_API_KEY"]}
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    restored = load(
        serialised,
        allowed_objects=[ChatTIRLlama],
        valid_namespaces=["langchain_tir"],
        secrets_from_env=True,
    )
    assert isinstance(restored, ChatTIRLlama)
    assert restored.invoke("hi").content == SEED_TEXT


def test_pickle(llm: ChatTIRLlama) -> None:
    llm.invoke("hi")
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.invoke("hi").content == SEED_TEXT


def test_ls_params(llm: ChatTIRLlama) -> None:
    params = llm.model_copy(update={"temperature": 0.5, "max_tokens": 9})._get_ls_params(stop=["x"])
    assert params == {
        "ls_provider": "tir",
        "ls_model_name": "llama3_1_8b_instruct",
        "ls_model_type": "chat",
        "ls_temperature": 0.5,
        "ls_max_tokens": 9,
        "ls_stop": ["x"],
    }
    assert llm._llm_type == "tir-chat"
    assert llm.profile is not None
    assert llm.profile.get("image_inputs") is False
    assert llm.profile.get("tool_calling") is True


def test_changed_connection_fields_take_effect(llm: ChatTIRLlama, emulator: Emulator) -> None:
    llm.invoke("hi")
    moved = llm.model_copy(update={"base_url": None, "host": emulator.url, "project_id": "77"})
    moved.invoke("hi")
    llm.project_id = "88"
    llm.invoke("hi")
    paths = [(r.path, r.query) for r in emulator.requests]
    assert paths == [
        ("/v1/chat/completions", {"project_id": ["1234"]}),
        ("/project/p-77/genai/llama3_1_8b_instruct/v1/chat/completions", {"project_id": ["77"]}),
        ("/v1/chat/completions", {"project_id": ["88"]}),
    ]
    # Sampling changes keep the same pooled client.
    assert llm.model_copy(update={"temperature": 0.3})._client is llm._client


def test_langchain_errors_pickle(llm: ChatTIRLlama, emulator: Emulator) -> None:
    emulator.queue(Reply(status=401, message="bad key"))
    with pytest.raises(AuthenticationError) as info:
        llm.invoke("hi")
    copy = pickle.loads(pickle.dumps(info.value))
    assert isinstance(copy, AuthenticationError)
    assert isinstance(copy, ModelAuthenticationError)
    assert (copy.message, copy.status_code) == (info.value.message, 401)
    assert copy.message.endswith("The server said: bad key")
