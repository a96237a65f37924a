"""TIRLlamaLLM against the emulator over real sockets; sync and async."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, Settings, SummaryIndex, VectorStoreIndex
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent
from llama_index.core.base.llms.types import (
    CacheControl,
    CachePoint,
    ChatMessage,
    ChatResponse,
    CitableBlock,
    CitationBlock,
    CompletionResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.callbacks.token_counting import TokenCountingHandler
from llama_index.core.chat_engine.types import ChatMode
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index_instrumentation import get_dispatcher
from pydantic import BaseModel

from llama_index_tir import DEFAULT_CONTEXT_WINDOW, TIRLlamaLLM, UnsupportedContentError
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply
from tir_transport import ConfigurationError, RateLimitError, StreamInterruptedError, track_usage

SEED_TEXT = "Hello. How can I assist you today?"
SEED_USAGE = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=text)]


@pytest.fixture
def llm(emulator: Emulator) -> TIRLlamaLLM:
    return TIRLlamaLLM(api_key=TEST_KEY, project_id="1234", base_url=emulator.base_url, timeout=5)


@pytest.fixture
def settings_llm(llm: TIRLlamaLLM) -> Iterator[TIRLlamaLLM]:
    Settings.llm = llm
    Settings.embed_model = MockEmbedding(embed_dim=8)
    yield llm
    Settings.llm = None  # type: ignore[assignment]
    Settings.embed_model = None  # type: ignore[assignment]


# -- the class contract --------------------------------------------------------------------------


def test_class_contract(llm: TIRLlamaLLM) -> None:
    assert isinstance(llm, FunctionCallingLLM)
    assert TIRLlamaLLM.class_name() == "TIRLlamaLLM"
    metadata = llm.metadata
    assert metadata.is_chat_model is True
    assert metadata.is_function_calling_model is True
    assert metadata.context_window == DEFAULT_CONTEXT_WINDOW
    assert metadata.num_output == 256
    assert metadata.model_name == "llama3_1_8b_instruct"
    custom = TIRLlamaLLM(context_window=32768, max_tokens=512, model="m")
    assert (custom.metadata.context_window, custom.metadata.num_output) == (32768, 512)
    assert custom.metadata.model_name == "m"


def test_construction_needs_no_key_and_does_no_io(emulator: Emulator) -> None:
    llm = TIRLlamaLLM(base_url=emulator.base_url)
    assert llm.metadata.is_chat_model
    with pytest.raises(ConfigurationError, match="TIR_API_KEY"):
        llm.chat(user("hi"))
    assert emulator.requests == []


def test_environment(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2E_TIR_ACCESS_TOKEN", "sdk-token")
    monkeypatch.setenv("TIR_PROJECT_ID", "p-9")
    monkeypatch.setenv("TIR_HOST", emulator.url)
    TIRLlamaLLM().complete("hi")
    (request,) = emulator.requests
    assert request.path == "/project/p-9/genai/llama3_1_8b_instruct/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sdk-token"


def test_endpoint_url(emulator: Emulator) -> None:
    TIRLlamaLLM(api_key=TEST_KEY, project_id="3", host=emulator.url, endpoint_id="is-4").chat(
        user("hi")
    )
    assert emulator.requests[0].path == "/project/p-3/endpoint/is-4/v1/chat/completions"


def test_fields_reach_the_wire(emulator: Emulator) -> None:
    llm = TIRLlamaLLM(
        api_key=TEST_KEY,
        base_url=emulator.base_url,
        temperature=0.2,
        max_tokens=40,
        top_p=0.5,
        frequency_penalty=0.1,
        presence_penalty=0.3,
        stop=["END"],
        seed=11,
        additional_kwargs={"top_k": 5},
    )
    llm.chat(user("hi"), repetition_penalty=1.1)
    body = emulator.requests[0].json
    assert body == {
        "model": "llama3_1_8b_instruct",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "max_tokens": 40,
        "top_p": 0.5,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.3,
        "stop": ["END"],
        "seed": 11,
        "top_k": 5,
        "repetition_penalty": 1.1,
    }


def test_key_never_shown(llm: TIRLlamaLLM) -> None:
    assert TEST_KEY not in repr(llm)
    assert TEST_KEY not in str(llm)
    assert TEST_KEY not in json.dumps(llm.to_dict(), default=str)
    assert TEST_KEY not in llm.to_json()
    assert TEST_KEY not in json.dumps(llm.to_payload(), default=str)
    assert "api_key" not in llm.to_dict()
    assert llm.to_dict()["class_name"] == "TIRLlamaLLM"


def test_from_dict_round_trip_reads_the_key_from_the_environment(
    llm: TIRLlamaLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    copy = TIRLlamaLLM.from_dict(llm.to_dict())
    assert copy.chat(user("hi")).message.content == SEED_TEXT


def test_callback_manager_pass_through(emulator: Emulator) -> None:
    manager = CallbackManager([])
    llm = TIRLlamaLLM(api_key=TEST_KEY, base_url=emulator.base_url, callback_manager=manager)
    assert llm.callback_manager is manager


# -- the eight entry points -------------------------------------------------------------------


def test_chat(llm: TIRLlamaLLM) -> None:
    response = llm.chat(user("hi"))
    assert response.message.role == MessageRole.ASSISTANT
    assert response.message.content == SEED_TEXT
    assert response.raw is not None
    assert response.raw["usage"] == {"prompt_tokens": 5, "total_tokens": 14, "completion_tokens": 9}
    assert response.additional_kwargs == SEED_USAGE


def test_achat(llm: TIRLlamaLLM) -> None:
    response = asyncio.run(llm.achat(user("hi")))
    assert response.message.content == SEED_TEXT
    assert response.additional_kwargs == SEED_USAGE


def test_complete_and_acomplete(llm: TIRLlamaLLM, emulator: Emulator) -> None:
    assert llm.complete("hi").text == SEED_TEXT
    completion = asyncio.run(llm.acomplete("hi"))
    assert isinstance(completion, CompletionResponse)
    assert completion.text == SEED_TEXT
    # A completion also carries the message's extras (finish_reason) next to the usage.
    assert completion.additional_kwargs == {**SEED_USAGE, "finish_reason": "stop"}
    assert emulator.requests[0].json["messages"] == [{"role": "user", "content": "hi"}]


def check_stream(responses: list[Any]) -> None:
    assert "".join(r.delta or "" for r in responses) == SEED_TEXT
    last = responses[-1]
    text = last.message.content if isinstance(last, ChatResponse) else last.text
    assert text == SEED_TEXT
    usage = {k: last.additional_kwargs[k] for k in SEED_USAGE}
    assert usage == SEED_USAGE
    assert last.raw["usage"]["total_tokens"] == 14
    assert all("total_tokens" not in r.additional_kwargs for r in responses[:-1])


def test_stream_chat(llm: TIRLlamaLLM) -> None:
    responses = list(llm.stream_chat(user("hi")))
    check_stream(responses)
    assert [r.message.content for r in responses[:3]] == ["Hello", "Hello.", "Hello. How"]


def test_stream_complete(llm: TIRLlamaLLM) -> None:
    check_stream(list(llm.stream_complete("hi")))


def test_astream_chat_and_astream_complete(llm: TIRLlamaLLM) -> None:
    async def run() -> tuple[list[Any], list[Any]]:
        chat_gen = await llm.astream_chat(user("hi"))
        chats = [r async for r in chat_gen]
        completion_gen = await llm.astream_complete("hi")
        completions = [r async for r in completion_gen]
        return chats, completions

    chats, completions = asyncio.run(run())
    check_stream(chats)
    check_stream(completions)


@pytest.mark.parametrize(
    "call",
    [
        "chat",
        "stream_chat",
        "complete",
        "stream_complete",
        "achat",
        "astream_chat",
        "acomplete",
        "astream_complete",
    ],
)
def test_callbacks_fire_once_per_call(emulator: Emulator, call: str) -> None:
    debug = LlamaDebugHandler()
    llm = TIRLlamaLLM(
        api_key=TEST_KEY, base_url=emulator.base_url, callback_manager=CallbackManager([debug])
    )
    arg: Any = "hi" if "complete" in call else user("hi")
    method = getattr(llm, call)
    if call.startswith("a"):

        async def run() -> None:
            result = await method(arg)
            if call.startswith("astream"):
                async for _ in result:
                    pass

        asyncio.run(run())
    else:
        result = method(arg)
        if call.startswith("stream"):
            list(result)
    pairs = debug.get_event_pairs(CBEventType.LLM)
    assert len(pairs) == 1
    assert len(emulator.requests) == 1


def test_token_counting_handler_matches_server_usage(emulator: Emulator) -> None:
    counter = TokenCountingHandler()
    llm = TIRLlamaLLM(
        api_key=TEST_KEY, base_url=emulator.base_url, callback_manager=CallbackManager([counter])
    )
    emulator.queue(Reply(prompt_tokens=111, completion_tokens=22))
    llm.chat(user("hi"))
    emulator.queue(Reply(prompt_tokens=333, completion_tokens=44))
    list(llm.stream_chat(user("hi")))
    emulator.queue(Reply(prompt_tokens=555, completion_tokens=66))

    async def run() -> None:
        async for _ in await llm.astream_complete("hi"):
            pass

    asyncio.run(run())
    assert counter.prompt_llm_token_count == 111 + 333 + 555
    assert counter.completion_llm_token_count == 22 + 44 + 66


def test_track_usage(llm: TIRLlamaLLM) -> None:
    with track_usage() as usage:
        llm.chat(user("hi"))
        list(llm.stream_complete("hi"))
    assert usage.requests == 2
    assert usage.total_tokens == 28


def test_instrumentation_events_never_carry_the_key(llm: TIRLlamaLLM) -> None:
    seen: list[BaseEvent] = []

    class Collect(BaseEventHandler):
        def handle(self, event: BaseEvent, **kwargs: Any) -> None:
            seen.append(event)

    handler = Collect()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    try:
        llm.chat(user("hi"))
        list(llm.stream_complete("hi"))
    finally:
        dispatcher.event_handlers.remove(handler)
    assert seen
    for event in seen:
        assert TEST_KEY not in json.dumps(event.model_dump(), default=str)


# -- errors and bad input ------------------------------------------------------------------------


def test_errors(llm: TIRLlamaLLM, emulator: Emulator) -> None:
    emulator.queue(*[Reply(status=429, message="slow down", headers={"retry-after": "0"})] * 3)
    with pytest.raises(RateLimitError, match="slow down"):
        llm.chat(user("hi"))
    emulator.queue(Reply(cut_after=3))
    with pytest.raises(StreamInterruptedError):
        list(llm.stream_chat(user("hi")))


def test_image_is_refused_clearly(llm: TIRLlamaLLM, emulator: Emulator) -> None:
    message = ChatMessage(
        role=MessageRole.USER,
        blocks=[TextBlock(text="what is this?"), ImageBlock(url="https://example.com/a.png")],
    )
    with pytest.raises(UnsupportedContentError, match="text-only"):
        llm.chat([message])
    with pytest.raises(ValueError, match="at least one message"):
        llm.chat([])
    assert emulator.requests == []


# -- tools -------------------------------------------------------------------------------------


def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"It is sunny in {city}."


WEATHER = FunctionTool.from_defaults(fn=get_weather)


def weather_call(arguments: str = '{"city": "Paris"}') -> Reply:
    return Reply(tool_calls=[{"id": "call-1", "name": "get_weather", "arguments": arguments}])


def test_prepare_chat_with_tools_leaves_history_alone(llm: TIRLlamaLLM) -> None:
    history = [ChatMessage(role=MessageRole.SYSTEM, content="be brief")]
    prepared = llm._prepare_chat_with_tools(
        [WEATHER], user_msg="weather?", chat_history=history, tool_required=True
    )
    assert len(history) == 1
    assert [m.content for m in prepared["messages"]] == ["be brief", "weather?"]
    assert prepared["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert prepared["parallel_tool_calls"] is False
    two = llm._prepare_chat_with_tools([WEATHER, WEATHER], user_msg="x", tool_required=True)
    assert two["tool_choice"] == "required"
    assert prepared["tools"][0]["function"]["name"] == "get_weather"
    named = llm._prepare_chat_with_tools([WEATHER], user_msg="x", tool_choice="get_weather")
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_a_forced_call_is_sent_strict_and_a_free_one_is_not(llm: TIRLlamaLLM) -> None:
    # vLLM's guided decoding holds a forced call's arguments to the schema only with strict;
    # OpenAI's LlamaIndex class sends strict only when asked, for every call.
    def strict(prepared: dict[str, Any]) -> list[Any]:
        return [t["function"].get("strict") for t in prepared["tools"]]

    assert strict(llm._prepare_chat_with_tools([WEATHER], user_msg="x", tool_required=True)) == [
        True
    ]
    named = llm._prepare_chat_with_tools([WEATHER], user_msg="x", tool_choice="get_weather")
    assert strict(named) == [True]
    assert strict(llm._prepare_chat_with_tools([WEATHER], user_msg="x")) == [None]
    off = llm.model_copy(update={"strict": False})
    assert strict(off._prepare_chat_with_tools([WEATHER], user_msg="x", tool_required=True)) == [
        None
    ]
    assert strict(llm._prepare_chat_with_tools([WEATHER], user_msg="x", strict=True)) == [True]
    # The caller's tool definitions are not changed.
    assert "strict" not in WEATHER.metadata.to_openai_tool()["function"]


@pytest.mark.parametrize(
    "text", ['{"name": "get_weather", "parameters": {"ci', ""], ids=["as-text", "native"]
)
def test_a_forced_call_cut_by_max_tokens_names_max_tokens(
    llm: TIRLlamaLLM, emulator: Emulator, text: str
) -> None:
    # vLLM sends a forced call that max_tokens cut as text (finish_reason length); a native
    # cut call has partial arguments. Neither calls the tool with what happened to fit.
    if text:
        emulator.queue(Reply(text=text, finish_reason="length"))
    else:
        emulator.queue(Reply(finish_reason="length", **_cut_native()))
    short = llm.model_copy(update={"max_tokens": 9})
    with pytest.raises(ValueError, match=r"max_tokens cut the call to get_weather.*it is 9"):
        short.predict_and_call([WEATHER], "Weather in Paris?", tool_required=True)


def _cut_native() -> dict[str, Any]:
    return {"tool_calls": [{"id": "call-1", "name": "get_weather", "arguments": '{"city": "Pa'}]}


def test_chat_with_tools_and_history_round_trip(llm: TIRLlamaLLM, emulator: Emulator) -> None:
    emulator.queue(weather_call())
    response = llm.chat_with_tools([WEATHER], user_msg="Weather in Paris?")
    (selection,) = llm.get_tool_calls_from_response(response)
    assert (selection.tool_id, selection.tool_name) == ("call-1", "get_weather")
    assert selection.tool_kwargs == {"city": "Paris"}
    body = emulator.requests[0].json
    assert body["tool_choice"] == "auto"
    history = [
        *user("Weather in Paris?"),
        response.message,
        ChatMessage(
            role=MessageRole.TOOL,
            content="sunny",
            additional_kwargs={"tool_call_id": "call-1", "name": "get_weather"},
        ),
    ]
    llm.chat(history)
    assert emulator.requests[1].json["messages"][1:] == [
        {
            # "" rather than null: llama.cpp's server rejects a null content.
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call-1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call-1"},
    ]


def test_streamed_tool_calls_accumulate_and_tolerate_partial_json(
    llm: TIRLlamaLLM, emulator: Emulator
) -> None:
    emulator.queue(weather_call('{"city": "San Francisco"}'))
    responses = list(llm.stream_chat_with_tools([WEATHER], user_msg="weather?"))
    partial = [llm.get_tool_calls_from_response(r, error_on_no_tool_call=False) for r in responses]
    with_calls = [p for p in partial if p]
    assert len(with_calls) > 2  # the arguments arrived in pieces
    assert all(p[0].tool_name == "get_weather" for p in with_calls)
    assert with_calls[-1][0].tool_kwargs == {"city": "San Francisco"}


def test_no_tool_call(llm: TIRLlamaLLM) -> None:
    response = llm.chat(user("hi"))
    with pytest.raises(ValueError, match="at least one tool call"):
        llm.get_tool_calls_from_response(response)
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []


def test_single_call_kept_unless_parallel_allowed(llm: TIRLlamaLLM, emulator: Emulator) -> None:
    two = Reply(
        tool_calls=[
            {"id": "a", "name": "get_weather", "arguments": '{"city": "A"}'},
            {"id": "b", "name": "get_weather", "arguments": '{"city": "B"}'},
        ]
    )
    emulator.queue(two, two)
    one = llm.chat_with_tools([WEATHER], user_msg="x")
    assert [s.tool_id for s in llm.get_tool_calls_from_response(one)] == ["a"]
    both = llm.chat_with_tools([WEATHER], user_msg="x", allow_parallel_tool_calls=True)
    assert [s.tool_id for s in llm.get_tool_calls_from_response(both)] == ["a", "b"]


def test_predict_and_call(llm: TIRLlamaLLM, emulator: Emulator) -> None:
    emulator.queue(weather_call())
    response = llm.predict_and_call([WEATHER], user_msg="Weather in Paris?")
    assert response.response == "It is sunny in Paris."


@pytest.mark.parametrize("streaming", [False, True], ids=["chat", "stream"])
def test_function_agent_finishes_a_tool_loop(
    llm: TIRLlamaLLM, emulator: Emulator, streaming: bool
) -> None:
    emulator.queue(weather_call(), Reply(text="It is sunny in Paris."))
    agent = FunctionAgent(tools=[WEATHER], llm=llm, streaming=streaming)

    async def run() -> str:
        return str(await agent.run("Weather in Paris?"))

    assert asyncio.run(run()) == "It is sunny in Paris."
    second = emulator.requests[1].json["messages"]
    assert second[-1] == {
        "role": "tool",
        "content": "It is sunny in Paris.",
        "tool_call_id": "call-1",
    }
    assert second[-2]["tool_calls"][0]["function"]["name"] == "get_weather"


def lookup(topic: str) -> CitableBlock:
    """Look a topic up in the handbook."""
    return CitableBlock(
        title="Handbook",
        source="handbook.pdf",
        content=[TextBlock(text="The office is in Pune,"), TextBlock(text="on the 4th floor.")],
    )


def test_a_tool_that_returns_a_citable_block_gives_the_model_its_text(
    llm: TIRLlamaLLM, emulator: Emulator
) -> None:
    # LlamaIndex lets a tool return a CitableBlock; OpenAILike raises on it. Its text was
    # dropped, and the model answered from an empty tool result.
    call = {"id": "call-1", "name": "lookup", "arguments": '{"topic": "office"}'}
    emulator.queue(Reply(tool_calls=[call]), Reply(text="Pune."))
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=lookup)], llm=llm)

    async def run() -> str:
        return str(await agent.run("Where is the office?"))

    assert asyncio.run(run()) == "Pune."
    assert emulator.requests[1].json["messages"][-1] == {
        "role": "tool",
        "content": "The office is in Pune,\non the 4th floor.",
        "tool_call_id": "call-1",
    }


def test_blocks_without_text_for_the_model(llm: TIRLlamaLLM, emulator: Emulator) -> None:
    quoted = CitationBlock(
        cited_content=TextBlock(text="4th floor"),
        source="handbook.pdf",
        title="Handbook",
        additional_location_info={},
    )
    cache = CachePoint(cache_control=CacheControl(type="ephemeral"))
    history = [
        ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="Where?"), cache]),
        ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=[ThinkingBlock(content="the handbook says"), TextBlock(text="Pune,"), quoted],
        ),
        ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="Sure?")]),
    ]
    llm.chat(history)
    assert emulator.requests[0].json["messages"] == [
        {"role": "user", "content": "Where?"},
        {"role": "assistant", "content": "Pune,\n4th floor"},
        {"role": "user", "content": "Sure?"},
    ]
    # A block of a kind the conversion does not know (a later LlamaIndex's) is refused,
    # never dropped.
    message = ChatMessage(role=MessageRole.USER, blocks=[])
    kind: Any = "hologram"
    message.blocks.append(TextBlock.model_construct(block_type=kind, text="x"))
    with pytest.raises(UnsupportedContentError, match="'hologram' block"):
        llm.chat([message])
    assert len(emulator.requests) == 1


def test_agent_workflow(llm: TIRLlamaLLM, emulator: Emulator) -> None:
    emulator.queue(weather_call(), Reply(text="Sunny."))
    workflow = AgentWorkflow.from_tools_or_functions([get_weather], llm=llm)

    async def run() -> str:
        return str(await workflow.run(user_msg="Weather in Paris?"))

    assert asyncio.run(run()) == "Sunny."


class City(BaseModel):
    """A city and its country."""

    name: str
    country: str


def test_structured_predict_and_structured_llm(llm: TIRLlamaLLM, emulator: Emulator) -> None:
    emulator.queue(
        Reply(tool_calls=[{"name": "City", "arguments": '{"name": "Pune", "country": "India"}'}])
    )
    city = llm.structured_predict(City, PromptTemplate("A city in {country}"), country="India")
    assert city == City(name="Pune", country="India")
    # LlamaIndex's function-calling program asks for a required call: with one tool, by name.
    assert emulator.requests[0].json["tool_choice"] == {
        "type": "function",
        "function": {"name": "City"},
    }
    assert emulator.requests[0].json["tools"][0]["function"]["name"] == "City"
    emulator.queue(
        Reply(tool_calls=[{"name": "City", "arguments": '{"name": "Goa", "country": "India"}'}])
    )
    structured = llm.as_structured_llm(City)
    response = structured.chat(user("A city in India"))
    assert response.raw == City(name="Goa", country="India")


# -- in LlamaIndex's engines ---------------------------------------------------------------


DOCS = [
    Document(text="The Ganges flows through India."),
    Document(text="TIR is E2E Networks' AI platform."),
]


@pytest.mark.usefixtures("settings_llm")
@pytest.mark.parametrize("streaming", [False, True], ids=["query", "stream"])
def test_vector_store_query_engine(emulator: Emulator, streaming: bool) -> None:
    index = VectorStoreIndex.from_documents(DOCS)
    engine = index.as_query_engine(streaming=streaming, similarity_top_k=2)
    response = engine.query("What is TIR?")
    text = "".join(response.response_gen) if streaming else str(response)  # type: ignore[union-attr,arg-type]
    assert text == SEED_TEXT
    prompt = json.dumps(emulator.requests[-1].json["messages"])
    assert "E2E Networks" in prompt
    assert emulator.requests[-1].json.get("stream", False) is streaming


@pytest.mark.usefixtures("settings_llm")
def test_async_query_engine(emulator: Emulator) -> None:
    engine = SummaryIndex.from_documents(DOCS).as_query_engine()

    async def run() -> str:
        return str(await engine.aquery("What is TIR?"))

    assert asyncio.run(run()) == SEED_TEXT


@pytest.mark.usefixtures("settings_llm")
def test_chat_engine(emulator: Emulator) -> None:
    engine = SummaryIndex.from_documents(DOCS).as_chat_engine(chat_mode=ChatMode.CONTEXT)
    assert str(engine.chat("What is TIR?")) == SEED_TEXT
    streamed = engine.stream_chat("And the Ganges?")
    assert "".join(streamed.response_gen) == SEED_TEXT
    last = emulator.requests[-1].json["messages"]
    assert last[-1] == {"role": "user", "content": "And the Ganges?"}
    assert any(m["content"] == SEED_TEXT for m in last if m["role"] == "assistant")


def test_tool_call_blocks_are_read(llm: TIRLlamaLLM) -> None:
    response = ChatResponse(
        message=ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=[ToolCallBlock(tool_call_id="x", tool_name="f", tool_kwargs='{"a": [1, 2')],
        )
    )
    (selection,) = llm.get_tool_calls_from_response(response)
    assert selection.tool_kwargs == {"a": [1, 2]}


def test_pickle(llm: TIRLlamaLLM) -> None:
    import pickle

    llm.chat(user("hi"))
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.chat(user("hi")).message.content == SEED_TEXT


def test_changed_connection_fields_take_effect(llm: TIRLlamaLLM, emulator: Emulator) -> None:
    llm.chat(user("hi"))
    llm.base_url = None
    llm.host = emulator.url
    llm.chat(user("hi"))
    assert emulator.requests[1].path == (
        "/project/p-1234/genai/llama3_1_8b_instruct/v1/chat/completions"
    )
