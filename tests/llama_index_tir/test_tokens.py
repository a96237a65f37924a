"""TIRLlamaLLM's tokenizer in LlamaIndex's places: Settings, TokenCountingHandler, chat memory."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator

import pytest
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.tools import FunctionTool, ToolSelection
from llama_index.core.utils import get_tokenizer

from llama_index_tir import TIRLlamaLLM
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply
from tests.tir_transport.test_tokens import META3, TEXTS, reference_prompt_tokens


@pytest.fixture
def restore_settings() -> Iterator[None]:
    before = Settings._tokenizer
    yield
    Settings._tokenizer = before


def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"It is sunny in {city}."


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_the_tokenizer_is_llama3s(text: str) -> None:
    assert TIRLlamaLLM().tokenizer(text) == META3.encode(text, bos=False, eos=False)


def test_settings_tokenizer(restore_settings: None) -> None:
    llm = TIRLlamaLLM()
    Settings.tokenizer = llm.tokenizer
    assert get_tokenizer()(TEXTS["tamil"]) == META3.encode(TEXTS["tamil"], bos=False, eos=False)
    # It pickles by name, as Ray and multiprocessing need.
    assert pickle.loads(pickle.dumps(llm.tokenizer)) is llm.tokenizer


def test_token_counting_handler(emulator: Emulator) -> None:
    llm = TIRLlamaLLM(base_url=emulator.base_url, api_key=TEST_KEY)
    counter = TokenCountingHandler(tokenizer=llm.tokenizer)
    llm.callback_manager = CallbackManager([counter])
    # The handler prefers the server's usage; a server (or gateway) that sends none leaves
    # the counting to the tokenizer.
    emulator.queue(Reply(text="नमस्ते, தமிழ்", no_usage=True))
    llm.complete(TEXTS["hindi"])
    (event,) = counter.llm_token_counts
    assert event.prompt == TEXTS["hindi"]
    assert event.prompt_token_count == len(META3.encode(TEXTS["hindi"], bos=False, eos=False))
    assert event.completion_token_count == len(META3.encode("नमस्ते, தமிழ்", bos=False, eos=False))


def test_chat_memory_stays_inside_its_limit() -> None:
    llm = TIRLlamaLLM()
    memory = ChatMemoryBuffer.from_defaults(llm=llm, tokenizer_fn=llm.tokenizer, token_limit=300)
    for i in range(30):
        memory.put(ChatMessage(role=MessageRole.USER, content=f"{i} {TEXTS['hindi']}"))
        memory.put(ChatMessage(role=MessageRole.ASSISTANT, content=f"{i} {TEXTS['tamil']}"))
    kept = memory.get()
    assert 0 < len(kept) < 60
    assert sum(len(llm.tokenizer(str(m.content))) for m in kept) <= 300


def test_message_counts_equal_the_prompt_the_server_builds(emulator: Emulator) -> None:
    llm = TIRLlamaLLM(base_url=emulator.base_url, api_key=TEST_KEY)
    tool = FunctionTool.from_defaults(fn=get_weather)
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Use tools. " + TEXTS["english"]),
        ChatMessage(role=MessageRole.USER, content=TEXTS["hindi"]),
        ChatMessage(role=MessageRole.ASSISTANT, content=TEXTS["code"]),
        ChatMessage(role=MessageRole.USER, content="Weather in Pune? " + TEXTS["emoji"]),
    ]
    llm.chat(messages)
    sent = emulator.requests[-1].json
    # A bound for any order: 5 tokens over for the system message first (written into the
    # system turn), 5 more with tools (the next message shares the tools' turn).
    expected = reference_prompt_tokens(sent["messages"])
    assert llm.count_message_tokens(messages) == expected + 5
    assert llm.count_message_tokens(messages[::-1]) == expected + 5
    llm.chat_with_tools([tool], chat_history=messages)
    sent = emulator.requests[-1].json
    assert "tools" in sent
    expected = reference_prompt_tokens(sent["messages"], sent["tools"])
    assert llm.count_message_tokens(sent_messages(sent), tools=[tool]) == expected + 10
    assert llm.count_message_tokens(sent_messages(sent)[::-1], tools=[tool]) == expected + 10


def test_a_reversed_agent_history_counts_no_less_than_it_is_sent(emulator: Emulator) -> None:
    # The newest message a big tool result: first in a reversed list, where the template
    # would write it without JSON's escapes.
    llm = TIRLlamaLLM(base_url=emulator.base_url, api_key=TEST_KEY)
    tool = FunctionTool.from_defaults(fn=get_weather)
    result = json.dumps([{"id": f"row-{k}", "note": "a\nb"} for k in range(30)], indent=2)
    call = ToolSelection(tool_id="c1", tool_name="get_weather", tool_kwargs={"city": "Pune"})
    messages = [
        ChatMessage(role=MessageRole.USER, content="Weather in Pune?"),
        ChatMessage(
            role=MessageRole.ASSISTANT,
            content="",
            additional_kwargs={"tool_calls": [call]},
        ),
        ChatMessage(
            role=MessageRole.TOOL, content=result, additional_kwargs={"tool_call_id": "c1"}
        ),
    ]
    llm.chat_with_tools([tool], chat_history=messages)
    sent = emulator.requests[-1].json
    expected = reference_prompt_tokens(sent["messages"], sent["tools"])
    assert llm.count_message_tokens(messages[::-1], tools=[tool]) >= expected


def sent_messages(sent: dict[str, object]) -> list[ChatMessage]:
    raw = sent["messages"]
    assert isinstance(raw, list)
    return [ChatMessage(role=MessageRole(m["role"]), content=m["content"]) for m in raw]


def test_the_window_default_and_override() -> None:
    assert TIRLlamaLLM().metadata.context_window == 131_072
    assert TIRLlamaLLM(context_window=8192).metadata.context_window == 8192
    # LlamaIndex needs a number even for a model the table does not know: a small one.
    assert TIRLlamaLLM(model="other").metadata.context_window == 8192
    with pytest.raises(ValueError, match="context_window"):
        TIRLlamaLLM(context_window=0)
