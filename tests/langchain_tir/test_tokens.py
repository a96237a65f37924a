"""ChatTIRLlama counts tokens as the server does: texts, every message kind, trimming, the window.

The reference is the official Llama 3.1 chat template tokenized by Meta's tokenizer
(`tests/tir_transport/test_tokens.py`), applied to what the emulator actually received.
"""

from __future__ import annotations

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
    assert llm.get_num_tokens_from_messages(HISTORY, tools=tools) == expected


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
    assert llm.get_num_tokens_from_messages(messages, tools=[get_weather]) == expected
    assert expected != ChatTIRLlama().get_num_tokens_from_messages(messages, tools=[get_weather])


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
