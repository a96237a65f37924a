"""ChatTIRLlama counts tokens as the server does: texts, every message kind, trimming, the window.

The reference is the official Llama 3.1 chat template tokenized by Meta's tokenizer
(`tests/tir_transport/test_tokens.py`), applied to what the emulator actually received.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    trim_messages,
)
from langchain_core.tools import tool

from langchain_tir import ChatTIRLlama, UnsupportedContentError
from llama_index_tir import TIRLlamaLLM
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator
from tests.tir_transport.test_tokens import META3, TEXTS, reference_prompt_tokens
from tir_transport._chat.tools import DEFAULT_SYSTEM


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"It is sunny in {city}."


def chat(emulator: Emulator, **kwargs: Any) -> ChatTIRLlama:
    return ChatTIRLlama(base_url=emulator.base_url, api_key=TEST_KEY, **kwargs)


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_text_counts_are_llama3s(text: str) -> None:
    llm = ChatTIRLlama()
    expected = META3.encode(text, bos=False, eos=False)
    assert llm.get_token_ids(text) == expected
    assert llm.get_num_tokens(text) == len(expected)


def test_custom_get_token_ids_still_wins() -> None:
    llm = ChatTIRLlama(custom_get_token_ids=lambda text: [7] * len(text))
    assert llm.get_num_tokens("abc") == 3
    assert llm.get_token_ids("ab") == [7, 7]


HISTORY: list[BaseMessage] = [
    SystemMessage("You answer briefly. " + TEXTS["english"]),
    HumanMessage(TEXTS["hindi"]),
    AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "पुणे"}, "id": "c1"}]),
    ToolMessage("It is sunny in पुणे. <|eot_id|> typed by a tool", tool_call_id="c1"),
    AIMessage(TEXTS["tamil"]),
    HumanMessage([{"type": "text", "text": TEXTS["code"]}, {"type": "text", "text": "fix it"}]),
    ChatMessage(role="user", content=TEXTS["emoji"]),
    AIMessage(TEXTS["special look-alikes"], name="bot"),
    HumanMessage("  and the whitespace?  \n"),
]


@pytest.mark.parametrize("with_tools", [False, True], ids=["no tools", "tools"])
def test_message_counts_equal_the_prompt_the_server_builds(
    emulator: Emulator, with_tools: bool
) -> None:
    llm = chat(emulator)
    runnable = llm.bind_tools([get_weather]) if with_tools else llm
    runnable.invoke(HISTORY)
    sent = emulator.requests[-1].json
    assert ("tools" in sent) is with_tools
    expected = reference_prompt_tokens(sent["messages"], sent.get("tools"))
    tools = [get_weather] if with_tools else None
    # A bound for any order (trim_messages counts lists reversed): in this order, 5 tokens
    # over for the system message first (written into the system turn), 5 more with tools
    # (the next message shares the tools' turn).
    slack = 5 + 5 * with_tools
    assert llm.get_num_tokens_from_messages(HISTORY, tools=tools) == expected + slack
    assert llm.get_num_tokens_from_messages(HISTORY[::-1], tools=tools) == expected + slack


@pytest.mark.parametrize(
    "message",
    [
        SystemMessage("Be brief."),
        HumanMessage("hi"),
        AIMessage("hello"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Pune"}, "id": "c"}]),
        ToolMessage("sunny", tool_call_id="c"),
        ChatMessage(role="user", content="hi"),
    ],
    ids=["system", "human", "ai", "ai tool call", "tool", "chat"],
)
def test_every_message_kind(emulator: Emulator, message: BaseMessage) -> None:
    messages = [HumanMessage("Weather?"), message]
    chat(emulator).invoke(messages)
    sent = emulator.requests[-1].json
    assert ChatTIRLlama().get_num_tokens_from_messages(messages) == reference_prompt_tokens(
        sent["messages"]
    )


def test_prompt_mode_counts_what_prompt_mode_sends(emulator: Emulator) -> None:
    llm = chat(emulator, tool_mode="prompt")
    messages = HISTORY[:5]
    llm.bind_tools([get_weather]).invoke(messages)
    sent = emulator.requests[-1].json
    assert "tools" not in sent  # the tools are in the prompt
    expected = reference_prompt_tokens(sent["messages"])
    # A bound for any order: prompt mode adds its own system message when the first is not
    # one, so that message is counted whatever comes first.
    added = ChatTIRLlama().get_num_tokens_from_messages([SystemMessage(DEFAULT_SYSTEM)])
    added -= ChatTIRLlama().get_num_tokens_from_messages([])
    count = llm.get_num_tokens_from_messages(messages, tools=[get_weather])
    assert expected <= count <= expected + added + 10
    assert count != ChatTIRLlama().get_num_tokens_from_messages(messages, tools=[get_weather])


def test_images_are_refused_as_the_request_would_be() -> None:
    image = HumanMessage([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}])
    with pytest.raises(UnsupportedContentError):
        ChatTIRLlama().get_num_tokens_from_messages([image])


def long_history(turns: int = 50) -> list[BaseMessage]:
    history: list[BaseMessage] = [SystemMessage("You are a helpful assistant.")]
    for i in range(turns // 2):
        history.append(HumanMessage(f"Question {i}: {TEXTS['english']} {TEXTS['hindi']}"))
        history.append(AIMessage(f"Answer {i}: {TEXTS['tamil']}"))
    return history


@pytest.mark.parametrize("max_tokens", [300, 600, 1500])
def test_trim_messages_keeps_the_prompt_inside_the_limit(
    emulator: Emulator, max_tokens: int
) -> None:
    llm = chat(emulator)
    history = long_history()
    trimmed = trim_messages(
        history,
        max_tokens=max_tokens,
        token_counter=llm,
        strategy="last",
        start_on="human",
        include_system=True,
    )
    assert isinstance(trimmed[0], SystemMessage)
    assert isinstance(trimmed[1], HumanMessage)
    assert len(trimmed) < len(history)
    assert llm.get_num_tokens_from_messages(trimmed) <= max_tokens
    # As much as fits, but for the template's frame (begin-of-text, the system turn's date
    # preamble, the generation prompt): trim_messages adds the system message's count, frame
    # included, to the rest's, which has its own, so it keeps that much room to spare.
    frame = llm.get_num_tokens_from_messages([])
    kept = len(trimmed) - 1
    more = [history[0], *history[-(kept + 2) :]]
    assert llm.get_num_tokens_from_messages(more) > max_tokens - frame
    # And the server sees what was counted.
    llm.invoke(trimmed)
    sent = emulator.requests[-1].json
    assert reference_prompt_tokens(sent["messages"]) <= max_tokens


def max_input_tokens(llm: ChatTIRLlama) -> int | None:
    assert llm.profile is not None
    return llm.profile.get("max_input_tokens")


def test_both_frameworks_report_one_window() -> None:
    assert max_input_tokens(ChatTIRLlama()) == TIRLlamaLLM().metadata.context_window == 131_072
    assert (
        max_input_tokens(ChatTIRLlama(context_window=8192))
        == TIRLlamaLLM(context_window=8192).metadata.context_window
        == 8192
    )
    scout = "llama_4_scout_17b_16e_instruct"
    assert (
        max_input_tokens(ChatTIRLlama(model=scout))
        == TIRLlamaLLM(model=scout).metadata.context_window
    )
    # A model the table does not know: LangChain leaves the window unset unless it is given.
    assert max_input_tokens(ChatTIRLlama(model="other")) is None
    assert max_input_tokens(ChatTIRLlama(model="other", context_window=4096)) == 4096


def test_context_window_is_validated_and_not_sent(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="context_window"):
        ChatTIRLlama(context_window=0)
    chat(emulator, context_window=4096).invoke("hi")
    assert "context_window" not in emulator.requests[-1].json


def test_an_empty_list_of_tools_is_no_tools(emulator: Emulator) -> None:
    # bind_tools([]) sends no "tools" (as `[]` the template would frame the prompt for tools,
    # 56 tokens, and OpenAI's API refuses it), and counts as no tools: the same request.
    llm = chat(emulator)
    messages = HISTORY[1:]
    llm.bind_tools([]).invoke(messages)
    sent = emulator.requests[-1].json
    assert "tools" not in sent and "parallel_tool_calls" not in sent
    expected = reference_prompt_tokens(sent["messages"], None)
    counted = llm.get_num_tokens_from_messages(messages, tools=[])
    assert counted == llm.get_num_tokens_from_messages(messages)
    assert expected <= counted <= expected + 5  # the any-order bound's slack


@tool
def search(query: str) -> str:
    """Search the catalogue."""
    return query


def _rows(i: int, n: int) -> str:
    # A JSON tool result: the template writes it as a JSON string, every quote escaped.
    rows = [{"id": f"item-{i}-{k}", "tags": ["a", "b"], "price": k * 1.5} for k in range(n)]
    return json.dumps(rows, indent=2)


def agent_history(system: bool) -> list[BaseMessage]:
    history: list[BaseMessage] = [SystemMessage("You are brief.")] if system else []
    for i in range(8):
        history.append(HumanMessage(f"Question {i}: find items of kind {i}."))
        call = {"name": "search", "args": {"query": f"kind {i}"}, "id": f"c{i}"}
        history.append(AIMessage("", tool_calls=[call]))
        history.append(ToolMessage(_rows(i, 10), tool_call_id=f"c{i}"))
        history.append(AIMessage(f"Found 10 items of kind {i}."))
    history.append(HumanMessage("And kind 99?"))
    history.append(AIMessage("", tool_calls=[{"name": "search", "args": {}, "id": "c99"}]))
    history.append(ToolMessage(_rows(99, 40), tool_call_id="c99"))  # the newest: big
    return history


STRATEGIES = {
    "last, system kept": {"strategy": "last", "start_on": "human", "include_system": True},
    "last": {"strategy": "last", "start_on": "human"},
    "last, partial": {"strategy": "last", "allow_partial": True},
    "first": {"strategy": "first"},
    "first, partial": {"strategy": "first", "allow_partial": True},
}


@pytest.mark.parametrize("with_tools", [False, True], ids=["no tools", "tools"])
@pytest.mark.parametrize("system", [True, False], ids=["system", "no system"])
@pytest.mark.parametrize("how", STRATEGIES.values(), ids=STRATEGIES.keys())
def test_every_trim_strategy_stays_inside_the_budget(
    emulator: Emulator, with_tools: bool, system: bool, how: dict[str, Any]
) -> None:
    # Before reversed lists were counted right, trim_messages kept 3,807 tokens for 3,500
    # with tools (the newest tool result counted as unescaped text).
    llm = chat(emulator)
    history = agent_history(system)
    tools = [search] if with_tools else None
    runnable = llm.bind_tools([search]) if with_tools else llm
    for budget in (3_500, 5_000):
        kept = trim_messages(
            history,
            max_tokens=budget,
            token_counter=lambda m: llm.get_num_tokens_from_messages(m, tools=tools),
            **how,
        )
        if not [m for m in kept if not isinstance(m, SystemMessage)]:
            continue  # nothing but the system message would be sent
        runnable.invoke(kept)
        sent = emulator.requests[-1].json
        assert reference_prompt_tokens(sent["messages"], sent.get("tools")) <= budget


@pytest.mark.parametrize("with_tools", [False, True], ids=["no tools", "tools"])
def test_a_reversed_history_counts_no_less_than_it_is_sent(
    emulator: Emulator, with_tools: bool
) -> None:
    llm = chat(emulator)
    history = agent_history(system=False)
    (llm.bind_tools([search]) if with_tools else llm).invoke(history)
    sent = emulator.requests[-1].json
    tools = [search] if with_tools else None
    assert llm.get_num_tokens_from_messages(history[::-1], tools=tools) >= (
        reference_prompt_tokens(sent["messages"], sent.get("tools"))
    )
