"""ChatOpenAI and ChatTIRLlama, the same program against the same server.

Each scenario runs with the peer and with ours (`side_by_side`); ours must give what the peer
gives, or, where the peer is wrong (`better_than_peer`), the right thing. docs/migrating.md's
table names the test behind each row.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from typing import Any, TypedDict

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.messages.tool import invalid_tool_call
from langchain_core.tools import tool
from pydantic import BaseModel, ValidationError

from tests.parity.sides import (
    Outcome,
    chat_openai,
    chat_tir,
    model_sees,
    run,
    side_by_side,
)
from tests.support.emulator import DEFAULT_MODEL, SEED_PIECES, Emulator, Reply
from tir_transport import BadRequestError, ContextLengthExceededError, StreamInterruptedError

SEED_TEXT = "".join(SEED_PIECES)


class City(BaseModel):
    name: str
    country: str


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


WEATHER = {"id": "call-1", "name": "get_weather", "arguments": json.dumps({"city": "Pune"})}


def merged(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    return whole


def stream(llm: Any, value: Any, **kwargs: Any) -> AIMessageChunk:
    return merged(list(llm.stream(value, **kwargs)))


def astream(llm: Any, value: Any, **kwargs: Any) -> AIMessageChunk:
    async def collect() -> list[AIMessageChunk]:
        return [c async for c in llm.astream(value, **kwargs)]

    return merged(asyncio.run(collect()))


def no_error(*outcomes: Any) -> None:
    for outcome in outcomes:
        assert outcome.error is None, repr(outcome.error)


# -- plain answers -------------------------------------------------------------------------------


def test_invoke_text_model_and_finish_reason(emulator: Emulator) -> None:
    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator).invoke("Hello"),
        lambda: chat_tir(emulator).invoke("Hello"),
        replies=(Reply(id="chat-7"),),
    )
    no_error(peer, ours)
    assert ours.value.content == peer.value.content == SEED_TEXT
    for key in ("model_name", "finish_reason", "id"):
        assert ours.value.response_metadata[key] == peer.value.response_metadata[key], key
    assert model_sees(ours.body) == model_sees(peer.body)


@pytest.mark.parametrize("how", [stream, astream], ids=["stream", "astream"])
def test_stream_text_and_usage(emulator: Emulator, how: Any) -> None:
    peer, ours = side_by_side(
        emulator,
        lambda: how(chat_openai(emulator, stream_usage=True), "Hello"),
        lambda: how(chat_tir(emulator), "Hello"),
    )
    no_error(peer, ours)
    assert ours.value.content == peer.value.content == SEED_TEXT
    assert ours.value.usage_metadata == peer.value.usage_metadata
    assert ours.value.response_metadata["finish_reason"] == "stop"
    assert ours.value.response_metadata["model_name"] == peer.value.response_metadata["model_name"]


# -- usage details -------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["invoke", "stream"])
def test_usage_metadata_with_token_details(emulator: Emulator, streamed: bool) -> None:
    # vLLM with its prefix cache reports usage.prompt_tokens_details.cached_tokens.
    def act(llm: Any) -> Any:
        return stream(llm, "Hello") if streamed else llm.invoke("Hello")

    peer, ours = side_by_side(
        emulator,
        lambda: act(chat_openai(emulator, stream_usage=True)),
        lambda: act(chat_tir(emulator)),
        replies=(Reply(cached_tokens=3),),
    )
    no_error(peer, ours)
    assert peer.value.usage_metadata["input_token_details"] == {"cache_read": 3}
    assert ours.value.usage_metadata == peer.value.usage_metadata


def test_usage_metadata_without_details(emulator: Emulator) -> None:
    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator).invoke("Hello"),
        lambda: chat_tir(emulator).invoke("Hello"),
    )
    no_error(peer, ours)
    assert ours.value.usage_metadata == peer.value.usage_metadata


# -- token_usage under OpenAI's names, id, system_fingerprint, logprobs ----------------------------


def test_response_metadata_token_usage_has_openai_names(emulator: Emulator) -> None:
    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator).invoke("Hello"),
        lambda: chat_tir(emulator).invoke("Hello"),
        replies=(Reply(id="chat-7"),),
    )
    no_error(peer, ours)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert (
            ours.value.response_metadata["token_usage"][key]
            == (peer.value.response_metadata["token_usage"][key])
        )
    for key in ("id", "system_fingerprint", "logprobs"):
        assert key in ours.value.response_metadata, key
        assert ours.value.response_metadata[key] == peer.value.response_metadata[key], key


def test_generate_llm_output_token_usage(emulator: Emulator) -> None:
    prompts: list[list[BaseMessage]] = [[HumanMessage("Hello")], [HumanMessage("Hello again")]]
    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator).generate(prompts),
        lambda: chat_tir(emulator).generate(prompts),
    )
    no_error(peer, ours)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        expected = peer.value.llm_output["token_usage"][key]
        assert ours.value.llm_output["token_usage"][key] == expected
    assert ours.value.llm_output["model_name"] == peer.value.llm_output["model_name"]


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value


@pytest.mark.parametrize("streaming", [False, True], ids=["generate", "streaming"])
def test_generate_llm_output_keeps_the_fingerprint_and_usage_details(
    emulator: Emulator, streaming: bool
) -> None:
    prompts: list[list[BaseMessage]] = [[HumanMessage("Hello")], [HumanMessage("Hello again")]]

    def setup(server: Emulator) -> None:
        server.system_fingerprint = "fp-1"

    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator, streaming=streaming).generate(prompts).llm_output,
        lambda: chat_tir(emulator, streaming=streaming).generate(prompts).llm_output,
        setup=setup,
        replies=(Reply(cached_tokens=3), Reply(cached_tokens=2)),
    )
    no_error(peer, ours)
    # openai's models give the details' unset fields as None; the server sent none of them.
    assert _without_none(ours.value) == _without_none(peer.value)
    if not streaming:
        assert ours.value["system_fingerprint"] == "fp-1"
        assert ours.value["token_usage"]["prompt_tokens_details"] == {"cached_tokens": 5}


# -- logprobs ------------------------------------------------------------------------------------


def test_logprobs_invoke(emulator: Emulator) -> None:
    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator, logprobs=True, top_logprobs=2).invoke("Hello"),
        lambda: chat_tir(emulator).invoke("Hello", logprobs=True, top_logprobs=2),
    )
    no_error(peer, ours)
    expected = peer.value.response_metadata["logprobs"]["content"]
    assert len(expected) == len(SEED_PIECES)
    assert [len(t["top_logprobs"]) for t in expected] == [2] * len(SEED_PIECES)
    assert ours.value.response_metadata["logprobs"]["content"] == expected
    assert ours.body["logprobs"] is True and ours.body["top_logprobs"] == 2


def test_logprobs_stream(emulator: Emulator) -> None:
    peer, ours = side_by_side(
        emulator,
        lambda: stream(chat_openai(emulator, stream_usage=True), "Hello", logprobs=True),
        lambda: stream(chat_tir(emulator), "Hello", logprobs=True),
    )
    no_error(peer, ours)
    expected = peer.value.response_metadata["logprobs"]["content"]
    assert [t["token"] for t in expected] == SEED_PIECES
    assert ours.value.response_metadata["logprobs"]["content"] == expected


# -- content lists -------------------------------------------------------------------------------


def test_text_parts_reach_the_model_as_vllm_joins_them(emulator: Emulator) -> None:
    message = HumanMessage(
        content=[
            {"type": "text", "text": "Context: TIR is E2E Networks' AI platform."},
            {"type": "text", "text": "Question: what is TIR?"},
        ]
    )
    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator).invoke([message]),
        lambda: chat_tir(emulator).invoke([message]),
    )
    no_error(peer, ours)
    assert model_sees(ours.body) == model_sees(peer.body)
    assert model_sees(ours.body)[0][1] == (
        "Context: TIR is E2E Networks' AI platform.\nQuestion: what is TIR?"
    )


def _history(result: ToolMessage) -> list[Any]:
    call = {"name": "get_weather", "args": {"city": "Pune"}, "id": "call-1", "type": "tool_call"}
    return [HumanMessage("Weather in Pune?"), AIMessage(content="", tool_calls=[call]), result]


def test_a_tool_result_as_text_parts(emulator: Emulator) -> None:
    # What an MCP tool returns through a LangGraph agent: a list of text blocks.
    result = ToolMessage(
        content=[{"type": "text", "text": "Sunny"}, {"type": "text", "text": "31 C"}],
        tool_call_id="call-1",
    )
    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator).bind_tools([get_weather]).invoke(_history(result)),
        lambda: chat_tir(emulator).bind_tools([get_weather]).invoke(_history(result)),
    )
    no_error(peer, ours)
    assert model_sees(ours.body) == model_sees(peer.body)
    assert model_sees(ours.body)[-1][1] == "Sunny\n31 C"


@pytest.mark.better_than_peer("a json block: the peer sends it as a part vLLM refuses (400)")
def test_a_tool_result_as_a_json_block(emulator: Emulator) -> None:
    result = ToolMessage(
        content=[{"type": "json", "json": {"sky": "clear", "celsius": 31}}], tool_call_id="call-1"
    )
    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator).bind_tools([get_weather]).invoke(_history(result)),
        lambda: chat_tir(emulator).bind_tools([get_weather]).invoke(_history(result)),
    )
    assert peer.raised() == "ModelInvalidRequestError"  # "Unknown part type: json"
    no_error(ours)
    assert json.loads(model_sees(ours.body)[-1][1]) == {"sky": "clear", "celsius": 31}


@pytest.mark.better_than_peer("a block nothing can send: the peer's request fails at the server")
def test_a_block_that_cannot_be_sent_is_an_error_before_sending(emulator: Emulator) -> None:
    message = HumanMessage(content=[{"type": "text", "text": "Hi"}, {"type": "mystery", "x": 1}])
    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator).invoke([message]),
        lambda: chat_tir(emulator).invoke([message]),
    )
    assert peer.raised() == "ModelInvalidRequestError" and len(peer.bodies) == 1
    assert isinstance(ours.error, ValueError) and "mystery" in str(ours.error)
    assert ours.bodies == []  # refused before anything was sent, never dropped


# -- bind(response_format=PydanticModel) -----------------------------------------------------------


@pytest.mark.parametrize("via", ["bind", "bind_tools"])
def test_response_format_pydantic_class(emulator: Emulator, via: str) -> None:
    def act(llm: Any) -> Any:
        if via == "bind":
            return llm.bind(response_format=City).invoke("A city in France?")
        return llm.bind_tools([get_weather], response_format=City, strict=True).invoke(
            "A city in France?"
        )

    peer, ours = side_by_side(
        emulator,
        lambda: act(chat_openai(emulator)),
        lambda: act(chat_tir(emulator)),
    )
    no_error(peer, ours)
    assert peer.value.additional_kwargs["parsed"] == City(name="emulated", country="emulated")
    assert ours.value.additional_kwargs["parsed"] == peer.value.additional_kwargs["parsed"]
    assert ours.body["response_format"]["json_schema"]["schema"]["required"] == [
        "name",
        "country",
    ]


@pytest.mark.parametrize("query", [True, False], ids=["default_query", "base_url alone"])
def test_the_tir_url_as_chatopenai_users_write_it(emulator: Emulator, query: bool) -> None:
    # docs/migrating.md's "before": the GenAI URL as base_url, and the project again as
    # default_query. Ours refused default_query; without it, it sent no project_id.
    url = f"{emulator.url}/project/p-123/genai/{DEFAULT_MODEL}/v1"
    extra: dict[str, Any] = {"default_query": {"project_id": "123"}} if query else {}
    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator, base_url=url, **extra).invoke("Hello"),
        lambda: chat_tir(emulator, base_url=url, model=DEFAULT_MODEL, **extra).invoke("Hello"),
    )
    no_error(peer, ours)
    assert ours.request.path == f"/project/p-123/genai/{DEFAULT_MODEL}/v1/chat/completions"
    assert ours.request.query == {"project_id": ["123"]}
    if query:
        assert (peer.request.path, peer.request.query) == (ours.request.path, ours.request.query)


def test_json_mode_with_a_schema_without_a_title(emulator: Emulator) -> None:
    # json_mode needs no title (the schema is only traced); ours failed building the trace.
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}

    def act(llm: Any) -> Any:
        return llm.with_structured_output(schema, method="json_mode").invoke("A city?")

    peer, ours = side_by_side(
        emulator,
        lambda: act(chat_openai(emulator)),
        lambda: act(chat_tir(emulator)),
        replies=(Reply(text='{"name": "Pune"}'),),
    )
    no_error(peer, ours)
    assert ours.value == peer.value == {"name": "Pune"}
    assert ours.body["response_format"] == peer.body["response_format"]


class CityDict(TypedDict):
    """A city and its country."""

    name: str
    country: str


CITY_SCHEMA = {
    "title": "City",
    "type": "object",
    "properties": {"name": {"type": "string"}, "country": {"type": "string"}},
    "required": ["name", "country"],
}


@pytest.mark.parametrize("schema", ["TypedDict", "JSON schema"])
def test_bind_tools_with_a_response_format_that_is_not_pydantic(
    emulator: Emulator, schema: str
) -> None:
    # ChatOpenAI turns either into a json_schema response format; ours sent the JSON schema
    # as the response format itself (vLLM refuses it) and failed on the TypedDict (not JSON).
    given: Any = CityDict if schema == "TypedDict" else CITY_SCHEMA

    def act(llm: Any) -> Any:
        return llm.bind_tools([get_weather], response_format=given).invoke("A city in France?")

    peer, ours = side_by_side(
        emulator,
        lambda: act(chat_openai(emulator)),
        lambda: act(chat_tir(emulator)),
    )
    no_error(peer, ours)
    assert ours.body["response_format"] == peer.body["response_format"]
    assert ours.body["response_format"]["type"] == "json_schema"
    assert ours.value.content == peer.value.content


# -- with_structured_output(..., tools=[...]) -----------------------------------------------------


@pytest.mark.parametrize("answer", ["object", "tool call"])
def test_structured_output_with_tools(emulator: Emulator, answer: str) -> None:
    reply = (
        Reply(text='{"name": "Pune", "country": "India"}')
        if answer == "object"
        else Reply(tool_calls=[WEATHER])
    )

    def act(llm: Any) -> Any:
        structured = llm.with_structured_output(
            City, tools=[get_weather], strict=True, include_raw=True
        )
        return structured.invoke("Weather in Pune, or the city?")

    peer, ours = side_by_side(
        emulator,
        lambda: act(chat_openai(emulator)),
        lambda: act(chat_tir(emulator)),
        replies=(reply,),
    )
    no_error(peer, ours)
    assert [t["function"]["name"] for t in ours.body["tools"]] == ["get_weather"]
    assert ours.body["response_format"]["type"] == "json_schema"
    assert ours.value["parsed"] == peer.value["parsed"]
    assert ours.value["parsing_error"] is peer.value["parsing_error"] is None
    assert [c["name"] for c in ours.value["raw"].tool_calls] == [
        c["name"] for c in peer.value["raw"].tool_calls
    ]


def test_response_format_pydantic_class_with_a_reply_that_does_not_fit(emulator: Emulator) -> None:
    # The peer raises pydantic's ValidationError; pydantic's class cannot be subclassed, so
    # ours raises OutputParserException (LangChain's parsing error), with the reply in
    # `llm_output` and the ValidationError as its cause. Both are ValueErrors: catch that.
    def act(llm: Any) -> Any:
        return llm.bind(response_format=City).invoke("The city?")

    peer, ours = side_by_side(
        emulator,
        lambda: act(chat_openai(emulator)),
        lambda: act(chat_tir(emulator)),
        replies=(Reply(text='{"name": "Pune"}'),),
    )
    assert isinstance(peer.error, ValidationError)
    assert isinstance(ours.error, OutputParserException)
    assert isinstance(ours.error, ValueError) and isinstance(peer.error, ValueError)
    assert isinstance(ours.error.__cause__, ValidationError)
    assert ours.error.llm_output == '{"name": "Pune"}'
    assert "country" in str(ours.error) and "country" in str(peer.error)


@pytest.mark.parametrize("method", ["function_calling", "json_mode"])
def test_structured_output_tools_with_another_method_are_left_out(
    emulator: Emulator, method: str
) -> None:
    # ChatOpenAI sends no tools with these methods (the answer must be the schema), and a
    # program written for it works. Ours does the same, and warns: the tools do nothing here.
    reply = (
        Reply(tool_calls=[{"name": "City", "arguments": '{"name": "Pune", "country": "India"}'}])
        if method == "function_calling"
        else Reply(text='{"name": "Pune", "country": "India"}')
    )

    def act(llm: Any) -> Any:
        return llm.with_structured_output(City, method=method, tools=[get_weather]).invoke("?")

    with pytest.warns(UserWarning, match="not sent"):
        peer, ours = side_by_side(
            emulator,
            lambda: act(chat_openai(emulator)),
            lambda: act(chat_tir(emulator)),
            replies=(reply,),
        )
    no_error(peer, ours)
    assert ours.value == peer.value == City(name="Pune", country="India")
    names = [[t["function"]["name"] for t in o.body.get("tools", [])] for o in (peer, ours)]
    assert names[0] == names[1]
    assert "get_weather" not in names[1]


# -- model_name, stop, max_completion_tokens, invalid tool calls ---------------------------------


def test_model_name_attribute(emulator: Emulator) -> None:
    assert chat_tir(emulator).model_name == chat_openai(emulator).model_name


def test_a_per_call_empty_stop_clears_the_constructors(emulator: Emulator) -> None:
    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator, stop=[" How"]).invoke("Hello", stop=[]),
        lambda: chat_tir(emulator, stop=[" How"]).invoke("Hello", stop=[]),
    )
    no_error(peer, ours)
    assert ours.value.content == peer.value.content == SEED_TEXT
    assert not ours.body.get("stop")


def test_a_stop_string(emulator: Emulator) -> None:
    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator, stop=" How").invoke("Hello"),
        lambda: chat_tir(emulator, stop=" How").invoke("Hello"),
    )
    no_error(peer, ours)
    assert ours.value.content == peer.value.content == "Hello."


@pytest.mark.parametrize("per_call", [False, True], ids=["constructor", "per-call"])
def test_max_completion_tokens(emulator: Emulator, per_call: bool) -> None:
    def act(make: Any) -> Any:
        if per_call:
            return make(emulator).invoke("Hello", max_completion_tokens=3)
        return make(emulator, max_completion_tokens=3).invoke("Hello")

    peer, ours = side_by_side(emulator, lambda: act(chat_openai), lambda: act(chat_tir))
    no_error(peer, ours)
    assert ours.value.content == peer.value.content == "Hello. How"
    assert ours.value.response_metadata["finish_reason"] == "length"


def test_invalid_tool_calls_in_the_history_are_sent(emulator: Emulator) -> None:
    # A call whose arguments did not parse, answered by a tool result: both must reach the
    # model, or the tool message is an orphan.
    bad = invalid_tool_call(name="get_weather", args='{"city": Pune}', id="call-1", error="x")
    history = [
        HumanMessage("Weather in Pune?"),
        AIMessage(content="", invalid_tool_calls=[bad]),
        ToolMessage(content="error: arguments are not JSON", tool_call_id="call-1"),
    ]
    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator).bind_tools([get_weather]).invoke(history),
        lambda: chat_tir(emulator).bind_tools([get_weather]).invoke(history),
    )
    no_error(peer, ours)
    assert model_sees(ours.body) == model_sees(peer.body)
    assert ours.body["messages"][1]["tool_calls"][0]["id"] == "call-1"


# -- a 400 that mentions tool_choice is the caller's error -----------------------------------------


def test_a_tool_choice_naming_no_tool_is_an_error_and_tools_stay_native(
    emulator: Emulator,
) -> None:
    wrong = {"type": "function", "function": {"name": "get_wether"}}

    def act(make: Any) -> Any:
        llm = make(emulator)
        tools = llm.bind_tools([get_weather])
        with pytest.raises(Exception) as caught:
            tools.bind(tool_choice=wrong).invoke("Weather in Pune?")
        # A later call, from another instance on the same URL: native tools still.
        make(emulator).bind_tools([get_weather]).invoke("Weather in Pune?")
        return Outcome(error=caught.value).raised()

    peer, ours = side_by_side(emulator, lambda: act(chat_openai), lambda: act(chat_tir))
    no_error(peer, ours)
    assert ours.value == peer.value == "ModelInvalidRequestError"
    assert len(ours.bodies) == len(peer.bodies) == 2  # no silent retry in prompt mode
    assert all("tools" in body for body in ours.bodies)


@pytest.mark.better_than_peer("bind_tools with a tool_choice naming no bound tool: a 400")
def test_bind_tools_with_a_tool_choice_naming_no_tool_is_refused_before_sending(
    emulator: Emulator,
) -> None:
    wrong = {"type": "function", "function": {"name": "nope"}}

    def act(make: Any) -> Any:
        with pytest.raises(Exception) as caught:
            make(emulator).bind_tools([get_weather], tool_choice=wrong).invoke("Weather?")
        return Outcome(error=caught.value).raised(), isinstance(caught.value, BadRequestError)

    peer, ours = side_by_side(emulator, lambda: act(chat_openai), lambda: act(chat_tir))
    no_error(peer, ours)
    assert peer.value[0] == ours.value[0] == "ModelInvalidRequestError"
    assert ours.value[1]  # tir_transport's BadRequestError, as the peer's is openai's
    assert len(peer.bodies) == 1
    assert ours.bodies == []  # refused before sending: nothing billed, nothing to wait for


def test_a_request_the_endpoint_refuses_is_an_error_not_prompt_mode(emulator: Emulator) -> None:
    # An older vLLM refuses one request's tool_choice; its tool parser is on all the same.
    refused = Reply(
        status=400, error_format="flat", message='tool_choice = "required" is not supported!'
    )

    def act(make: Any) -> Any:
        with pytest.raises(Exception) as caught:
            make(emulator).bind_tools([get_weather], tool_choice="required").invoke("Weather?")
        later = make(emulator).bind_tools([get_weather]).invoke("Weather in Pune?")
        return Outcome(error=caught.value).raised(), later.tool_calls

    peer, ours = side_by_side(
        emulator,
        lambda: act(chat_openai),
        lambda: act(chat_tir),
        replies=(refused, Reply(tool_calls=[WEATHER])),
    )
    no_error(peer, ours)
    assert ours.value == peer.value
    assert ours.value[0] == "ModelInvalidRequestError"
    assert len(ours.bodies) == len(peer.bodies) == 2  # no silent retry in prompt mode
    assert all("tools" in body for body in ours.bodies)


def test_what_one_client_learns_stays_in_that_client(emulator: Emulator) -> None:
    # Ours only: the peer never falls back. An endpoint without tool parsing sends this
    # client's later calls to prompt mode at once; another object finds out for itself.
    def act() -> Any:
        first = chat_tir(emulator).bind_tools([get_weather])
        first.invoke("Weather?")
        first.invoke("Weather?")
        chat_tir(emulator).bind_tools([get_weather]).invoke("Weather?")
        return ["tools" in r.json for r in emulator.requests if r.method == "POST"]

    outcome = run(emulator, act, setup=lambda em: setattr(em, "reject_tools", True))
    assert outcome.error is None
    # native, refused -> prompt; prompt at once; a new object: native, refused -> prompt
    assert outcome.value == [True, False, False, True, False]


@pytest.mark.parametrize("choice", ["auto", "required", "none"])
@pytest.mark.better_than_peer("bind_tools([]): vLLM 0.32 refuses the peer's empty tools list")
def test_no_tools_with_a_tool_choice_is_a_plain_call(emulator: Emulator, choice: str) -> None:
    # A program that binds a list of tools that happens to be empty (filtered by permissions).
    def act(llm: Any) -> Any:
        return llm.bind_tools([], tool_choice=choice).invoke("Hello").content

    peer, ours = side_by_side(
        emulator, lambda: act(chat_openai(emulator)), lambda: act(chat_tir(emulator))
    )
    assert peer.raised() == "ModelInvalidRequestError"  # "`tools` must not be an empty array"
    assert peer.body["tools"] == []
    no_error(ours)
    assert ours.value
    # Neither `tools` nor its `tool_choice`: vLLM refuses a tool_choice without tools.
    assert "tools" not in ours.body and "tool_choice" not in ours.body


# -- tools and structured output, as the peer does them -------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["invoke", "stream"])
def test_tool_calls(emulator: Emulator, streamed: bool) -> None:
    def act(llm: Any) -> Any:
        bound = llm.bind_tools([get_weather])
        return stream(bound, "Weather in Pune?") if streamed else bound.invoke("Weather?")

    peer, ours = side_by_side(
        emulator,
        lambda: act(chat_openai(emulator, stream_usage=True)),
        lambda: act(chat_tir(emulator)),
        replies=(Reply(tool_calls=[WEATHER]),),
    )
    no_error(peer, ours)
    assert ours.value.tool_calls == peer.value.tool_calls
    assert ours.value.tool_calls[0]["args"] == {"city": "Pune"}


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output(emulator: Emulator, method: str) -> None:
    def act(llm: Any) -> Any:
        return llm.with_structured_output(City, method=method).invoke("A city in France?")

    peer, ours = side_by_side(
        emulator, lambda: act(chat_openai(emulator)), lambda: act(chat_tir(emulator))
    )
    no_error(peer, ours)
    assert ours.value == peer.value == City(name="emulated", country="emulated")


# -- the structured-output runnables carry LangChain's usual names ---------------------------------


def _event_names(llm: Any, schema: Any) -> set[str]:
    async def collect() -> set[str]:
        structured = llm.with_structured_output(schema)
        return {e["name"] async for e in structured.astream_events("A city?", version="v2")}

    return asyncio.run(collect())


def test_structured_output_parser_names(emulator: Emulator) -> None:
    schema = City.model_json_schema()
    peer, ours = side_by_side(
        emulator,
        lambda: _event_names(chat_openai(emulator), schema),
        lambda: _event_names(chat_tir(emulator), schema),
    )
    no_error(peer, ours)
    assert "JsonOutputParser" in peer.value
    # The peer adds a refusal check (OpenAI's refusals; vLLM sends none).
    assert ours.value - {"ChatTIRLlama"} == peer.value - {"ChatOpenAI", "_check_refusal"}


@pytest.mark.better_than_peer("a pydantic schema: the peer's parser is an anonymous lambda")
def test_structured_output_pydantic_parser_name(emulator: Emulator) -> None:
    peer, ours = side_by_side(
        emulator,
        lambda: _event_names(chat_openai(emulator), City),
        lambda: _event_names(chat_tir(emulator), City),
    )
    no_error(peer, ours)
    assert "PydanticOutputParser" not in peer.value and "RunnableLambda" in peer.value
    assert "PydanticOutputParser" in ours.value
    assert not any(name.startswith("Whole") for name in ours.value)


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 404, 429])
def test_http_errors_keep_the_peers_class_names(emulator: Emulator, status: int) -> None:
    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator).invoke("Hello"),
        lambda: chat_tir(emulator).invoke("Hello"),
        replies=(Reply(status=status),),
    )
    assert ours.raised() == peer.raised() is not None


@pytest.mark.better_than_peer("a context overflow: the peer's plain BadRequestError")
def test_context_overflow_is_typed(emulator: Emulator) -> None:
    def setup(server: Emulator) -> None:
        server.max_context = 3

    peer, ours = side_by_side(
        emulator,
        lambda: chat_openai(emulator).invoke("Hello there, model"),
        lambda: chat_tir(emulator).invoke("Hello there, model"),
        setup=setup,
    )
    assert peer.raised() == "ModelInvalidRequestError"
    assert isinstance(ours.error, ContextLengthExceededError)
    assert ours.raised() == "ContextOverflowError"  # langchain-core's own class for it
    assert isinstance(ours.error, BadRequestError)


@pytest.mark.better_than_peer("n=2: the peer bills two answers and returns one")
def test_n_above_one(emulator: Emulator) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer, ours = side_by_side(
            emulator,
            lambda: chat_openai(emulator, n=2).invoke("Hello"),
            lambda: chat_tir(emulator, n=2).invoke("Hello"),
        )
    assert peer.error is None and peer.body["n"] == 2  # two answers billed
    assert isinstance(ours.error, ValueError) and ours.bodies == []


def test_an_error_event_in_a_stream(emulator: Emulator) -> None:
    reply = Reply(error_event_after=3)
    peer, ours = side_by_side(
        emulator,
        lambda: stream(chat_openai(emulator, stream_usage=True), "Hello"),
        lambda: stream(chat_tir(emulator), "Hello"),
        replies=(reply,),
    )
    assert "emulated failure" in str(peer.error)  # openai's APIError
    assert isinstance(ours.error, StreamInterruptedError)
    assert "emulated failure" in str(ours.error)
