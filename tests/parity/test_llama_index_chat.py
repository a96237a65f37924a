"""OpenAILike and TIRLlamaLLM, the same program against the same server.

Each scenario runs with the peer and with ours (`side_by_side`); ours must give what the peer
gives, or, where the peer is wrong (`better_than_peer`), the right thing.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from tests.parity.sides import model_sees, openai_like, side_by_side, tir_llm
from tests.support.emulator import SEED_PIECES, Emulator, Reply

SEED_TEXT = "".join(SEED_PIECES)


class City(BaseModel):
    name: str
    country: str


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


WEATHER_TOOL = FunctionTool.from_defaults(fn=get_weather)
WEATHER = {"id": "call-1", "name": "get_weather", "arguments": json.dumps({"city": "Pune"})}
HELLO = [ChatMessage(role=MessageRole.USER, content="Hello")]


def no_error(*outcomes: Any) -> None:
    for outcome in outcomes:
        assert outcome.error is None, repr(outcome.error)


def test_chat_text_and_usage(emulator: Emulator) -> None:
    peer, ours = side_by_side(
        emulator,
        lambda: openai_like(emulator).chat(HELLO),
        lambda: tir_llm(emulator).chat(HELLO),
    )
    no_error(peer, ours)
    assert ours.value.message.content == peer.value.message.content == SEED_TEXT
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert ours.value.additional_kwargs[key] == peer.value.additional_kwargs[key]
    assert model_sees(ours.body) == model_sees(peer.body)


@pytest.mark.parametrize("given", [{}, {"temperature": 0.7}], ids=["unset", "set"])
def test_sampling_the_same_way(emulator: Emulator, given: dict[str, Any]) -> None:
    # OpenAILike sends temperature 0.1 when none is set (LlamaIndex's DEFAULT_TEMPERATURE);
    # sending none would leave it to vLLM's default for the model (0.6 for Llama 3.1 Instruct's
    # generation config): a program moved over would answer less predictably.
    peer, ours = side_by_side(
        emulator,
        lambda: openai_like(emulator, **given).chat(HELLO),
        lambda: tir_llm(emulator, **given).chat(HELLO),
    )
    no_error(peer, ours)
    assert ours.body["temperature"] == peer.body["temperature"] == given.get("temperature", 0.1)


def test_stream_options_from_additional_kwargs(emulator: Emulator) -> None:
    # How OpenAILike users ask vLLM for usage in every chunk. Both leave them off a request
    # that does not stream (vLLM refuses them there) and keep them on a stream.
    options = {"include_usage": True, "continuous_usage_stats": True}

    def act(llm: Any) -> str:
        llm.chat(HELLO)
        return "".join(r.delta or "" for r in llm.stream_chat(HELLO))

    for make in (openai_like, tir_llm):
        emulator.reset()
        assert act(make(emulator, additional_kwargs={"stream_options": options})) == SEED_TEXT
        plain, streamed = (r.json for r in emulator.requests)
        assert "stream_options" not in plain
        assert streamed["stream_options"] == options


def test_complete_text(emulator: Emulator) -> None:
    peer, ours = side_by_side(
        emulator,
        lambda: openai_like(emulator).complete("Hello"),
        lambda: tir_llm(emulator).complete("Hello"),
    )
    no_error(peer, ours)
    assert ours.value.text == peer.value.text == SEED_TEXT


def test_stream_chat_text(emulator: Emulator) -> None:
    def act(llm: Any) -> tuple[str, str]:
        responses = list(llm.stream_chat(HELLO))
        return "".join(r.delta or "" for r in responses), responses[-1].message.content

    peer, ours = side_by_side(
        emulator, lambda: act(openai_like(emulator)), lambda: act(tir_llm(emulator))
    )
    no_error(peer, ours)
    assert ours.value == peer.value == (SEED_TEXT, SEED_TEXT)


# -- ChatResponse.raw reads as OpenAILike's does --------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["chat", "achat"])
def test_raw_reads_like_the_peers(emulator: Emulator, asynchronous: bool) -> None:
    def act(llm: Any) -> tuple[Any, ...]:
        raw = asyncio.run(llm.achat(HELLO)).raw if asynchronous else llm.chat(HELLO).raw
        # OpenAILike code: attributes, as on openai's ChatCompletion.
        return (
            raw.id,
            raw.model,
            raw.usage.prompt_tokens,
            raw.usage.completion_tokens,
            raw.choices[0].message.content,
            raw.choices[0].finish_reason,
        )

    peer, ours = side_by_side(
        emulator,
        lambda: act(openai_like(emulator)),
        lambda: act(tir_llm(emulator)),
        replies=(Reply(id="chat-7"),),
    )
    no_error(peer, ours)
    assert ours.value == peer.value
    assert tir_llm(emulator).chat(HELLO).raw["usage"]["prompt_tokens"] > 0  # still a dict


def test_streamed_raw_reads_like_the_peers(emulator: Emulator) -> None:
    # OpenAILike code reading each streamed chunk: every raw has a first choice with a delta.
    def act(llm: Any) -> Any:
        responses = list(llm.stream_chat(HELLO))
        pieces = [r.raw.choices[0].delta.content or "" for r in responses]
        return "".join(pieces), responses[-1].raw.choices[0].finish_reason

    peer, ours = side_by_side(
        emulator, lambda: act(openai_like(emulator)), lambda: act(tir_llm(emulator))
    )
    no_error(peer, ours)
    assert ours.value == peer.value == (SEED_TEXT, "stop")


def test_raw_has_the_peers_methods_and_no_made_up_fields(emulator: Emulator) -> None:
    def act(llm: Any) -> tuple[Any, ...]:
        raw = llm.chat(HELLO).raw
        return (
            json.loads(raw.model_dump_json())["model"],
            json.loads(raw.to_json())["usage"]["total_tokens"],
            raw.to_dict()["choices"][0]["message"]["role"],
            None in raw.model_dump(exclude_none=True)["choices"][0]["message"].values(),
            raw.usage.model_dump()["prompt_tokens"] > 0,
            hasattr(raw, "no_such_field"),
            raw.choices[0].message.refusal,  # an OpenAI field the reply lacks: None
        )

    peer, ours = side_by_side(
        emulator, lambda: act(openai_like(emulator)), lambda: act(tir_llm(emulator))
    )
    no_error(peer, ours)
    assert ours.value == peer.value
    assert ours.value[5] is False


# -- logprobs ------------------------------------------------------------------------------------


def test_logprobs(emulator: Emulator) -> None:
    peer, ours = side_by_side(
        emulator,
        lambda: openai_like(emulator, logprobs=True, top_logprobs=2).chat(HELLO),
        lambda: tir_llm(emulator, logprobs=True, top_logprobs=2).chat(HELLO),
    )
    no_error(peer, ours)
    assert peer.value.logprobs is not None and len(peer.value.logprobs) == len(SEED_PIECES)
    assert ours.value.logprobs == peer.value.logprobs
    assert ours.body["logprobs"] is True and ours.body["top_logprobs"] == 2


# -- a 400 that mentions tool_choice is the caller's error -----------------------------------------


def test_a_tool_choice_naming_no_tool_is_an_error_and_tools_stay_native(
    emulator: Emulator,
) -> None:
    def act(make: Any) -> Any:
        with pytest.raises(Exception) as caught:
            make(emulator).chat_with_tools([WEATHER_TOOL], "Weather?", tool_choice="get_wether")
        make(emulator).chat_with_tools([WEATHER_TOOL], "Weather in Pune?")
        return type(caught.value).__name__

    peer, ours = side_by_side(emulator, lambda: act(openai_like), lambda: act(tir_llm))
    no_error(peer, ours)
    assert ours.value == peer.value == "BadRequestError"
    assert len(ours.bodies) == len(peer.bodies) == 2  # no silent retry in prompt mode
    assert all("tools" in body for body in ours.bodies)


# -- tools, content blocks, structured output -----------------------------------------------------


def test_tool_calls(emulator: Emulator) -> None:
    def act(llm: Any) -> list[tuple[str, dict[str, Any]]]:
        response = llm.chat_with_tools([WEATHER_TOOL], "Weather in Pune?")
        calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=True)
        return [(c.tool_name, c.tool_kwargs) for c in calls]

    peer, ours = side_by_side(
        emulator,
        lambda: act(openai_like(emulator)),
        lambda: act(tir_llm(emulator)),
        replies=(Reply(tool_calls=[WEATHER]),),
    )
    no_error(peer, ours)
    assert ours.value == peer.value == [("get_weather", {"city": "Pune"})]


@pytest.mark.better_than_peer("text blocks: the peer glues them with no separator")
def test_text_blocks_reach_the_model_as_vllm_joins_parts(emulator: Emulator) -> None:
    message = ChatMessage(
        role=MessageRole.USER,
        blocks=[TextBlock(text="Context: TIR is a platform."), TextBlock(text="Question: what?")],
    )
    peer, ours = side_by_side(
        emulator,
        lambda: openai_like(emulator).chat([message]),
        lambda: tir_llm(emulator).chat([message]),
    )
    no_error(peer, ours)
    assert model_sees(peer.body)[0][1] == "Context: TIR is a platform.Question: what?"
    # What ChatOpenAI's list reaches the model as (vLLM joins text parts with a newline).
    assert model_sees(ours.body)[0][1] == "Context: TIR is a platform.\nQuestion: what?"


def test_structured_predict(emulator: Emulator) -> None:
    prompt = PromptTemplate("A city in {country}?")

    def act(llm: Any) -> Any:
        return llm.structured_predict(City, prompt, country="India")

    peer, ours = side_by_side(
        emulator, lambda: act(openai_like(emulator)), lambda: act(tir_llm(emulator))
    )
    no_error(peer, ours)
    assert ours.value == peer.value == City(name="emulated", country="emulated")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429])
def test_http_errors_keep_the_peers_class_names(emulator: Emulator, status: int) -> None:
    peer, ours = side_by_side(
        emulator,
        lambda: openai_like(emulator).chat(HELLO),
        lambda: tir_llm(emulator).chat(HELLO),
        replies=(Reply(status=status),),
    )
    assert ours.raised() == peer.raised() is not None
