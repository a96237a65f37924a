"""vLLM without --enable-auto-tool-choice: tools fall back to the prompt (tool_mode auto)."""

from __future__ import annotations

import io
import logging

import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import tool

from langchain_tir import ChatTIRLlama
from tests.conftest import Caller
from tests.vllm.conftest import Engine
from tests.vllm.test_chat import MODEL, WEATHER, ask, client
from tir_llama.cli import main as cli_main
from tir_transport import BadRequestError, build_payload

pytestmark = pytest.mark.vllm

KEY = "vllm-local"


def test_the_endpoint_rejects_native_tools(vllm_chat_notools: Engine, call: Caller) -> None:
    body = build_payload(ask("What is the weather in Paris?"), MODEL, max_tokens=8, tools=[WEATHER])
    with pytest.raises(BadRequestError, match="--enable-auto-tool-choice"):
        call.create(client(vllm_chat_notools, tool_mode="native"), body)


def test_auto_falls_back_to_tools_in_the_prompt_once(
    vllm_chat_notools: Engine, call: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    body = build_payload(
        ask("What is the weather in Paris?"),
        MODEL,
        max_tokens=40,
        temperature=0,
        tools=[WEATHER],
        tool_choice="auto",
    )
    chat = client(vllm_chat_notools)
    with caplog.at_level(logging.INFO, logger="tir_transport"):
        first = call.create(chat, body)
        second = call.create(chat, body)
    fallbacks = [r for r in caplog.records if "does not take native tools" in r.getMessage()]
    # Said once for the endpoint, remembered after: the second request goes in prompt mode.
    assert len(fallbacks) == 1
    for reply in (first, second):
        assert reply.usage is not None
        # The tools travel in the prompt: Llama 3.1's tool instructions and the schema.
        assert reply.usage.input_tokens > 150
        # Either an answer or a call the product read out of the text; never the raw JSON.
        assert reply.text or reply.tool_calls
        assert '"parameters"' not in (reply.text or "")


def test_a_streamed_call_in_prompt_mode_is_never_text(
    vllm_chat_notools: Engine, call: Caller
) -> None:
    # In prompt mode the model writes the call as text; the stream shows it as a call.
    body = build_payload(
        [
            {"role": "system", "content": "Always answer with a function call."},
            *ask("What is the weather in Paris?"),
        ],
        MODEL,
        stream=True,
        max_tokens=60,
        temperature=0,
        tools=[WEATHER],
    )
    chunks = call.stream(client(vllm_chat_notools), body)
    text = "".join(c.text or "" for c in chunks)
    assert '"parameters"' not in text


def test_langchain_bind_tools_on_the_endpoint(vllm_chat_notools: Engine) -> None:
    @tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        return "sunny"

    llm = ChatTIRLlama(
        api_key=KEY, base_url=vllm_chat_notools.base_url, max_tokens=60, temperature=0
    )
    message = llm.bind_tools([get_weather]).invoke("What is the weather in Paris?")
    assert isinstance(message, AIMessage)
    assert message.text or message.tool_calls
    assert '"parameters"' not in message.text


def test_doctor_says_tools_go_in_the_prompt(
    vllm_chat_notools: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", KEY)
    out = io.StringIO()
    code = cli_main(["--base-url", vllm_chat_notools.base_url, "doctor"], out)
    assert code == 0, out.getvalue()
    assert "native tool calling is off here" in out.getvalue()
