"""Where OpenAILike gets a corner right, TIRLlamaLLM does too (each reproduced, then fixed)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from llama_index.core import Document, SummaryIndex
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.tools import FunctionTool
from pydantic import ValidationError

from llama_index_tir import TIRLlamaLLM
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply
from tir_transport import StreamInterruptedError


def make(emulator: Emulator, **kwargs: Any) -> TIRLlamaLLM:
    return TIRLlamaLLM(api_key=TEST_KEY, base_url=emulator.base_url, timeout=5, **kwargs)


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=text)]


def run_quietly(main: Any) -> list[str]:
    """Run `main()` in a fresh loop; return what the loop's exception handler was given."""
    reported: list[str] = []

    async def wrapper() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(
            lambda _, context: reported.append(
                f"{context.get('message')}: {context.get('exception')!r}"
            )
        )
        await main()

    asyncio.run(wrapper())
    return reported


# -- leaving an async stream early ----------------------------------------------------------------


@pytest.mark.parametrize("limits", [{}, {"max_in_flight": 2}], ids=["plain", "limits"])
def test_leaving_an_async_stream_early_is_quiet(emulator: Emulator, limits: dict[str, Any]) -> None:
    llm = make(emulator, **limits)

    async def main() -> None:
        emulator.queue(Reply(delay=0.05))
        async for _ in await llm.astream_chat(user("hi")):
            break
        emulator.queue(Reply(delay=0.05))
        async for _ in await llm.astream_complete("hi"):
            break

    assert run_quietly(main) == []


def test_leaving_a_streaming_query_engine_early_is_quiet(emulator: Emulator) -> None:
    llm = make(emulator)

    async def main() -> None:
        index = SummaryIndex.from_documents([Document(text="Rivers of India.")])
        engine = index.as_query_engine(llm=llm, streaming=True)
        emulator.queue(Reply(delay=0.05))
        response = await engine.aquery("Name a river.")
        async for _ in response.async_response_gen():  # type: ignore[union-attr]
            break

    assert run_quietly(main) == []


def test_a_stream_closed_early_gives_its_connection_back(emulator: Emulator) -> None:
    llm = make(emulator)

    async def main() -> int:
        emulator.queue(Reply(delay=0.05))
        stream = await llm.astream_chat(user("hi"))
        async for _ in stream:
            break
        await stream.aclose()  # LlamaIndex's wrapper: it leaves ours to be collected
        del stream
        gc.collect()
        # Ours, collected, is closed by asyncio right away (on this loop: wait in a thread).
        await asyncio.to_thread(
            emulator.wait_until, lambda: emulator.open_connections == 0, "the connection closed"
        )
        return emulator.open_connections

    assert asyncio.run(main()) == 0


# -- completion_to_prompt, messages_to_prompt ---------------------------------------------------


def test_completion_to_prompt_is_applied(emulator: Emulator) -> None:
    llm = make(emulator, completion_to_prompt=lambda p: f"Answer briefly. {p}")
    llm.complete("Why?")
    list(llm.stream_complete("Why?"))
    asyncio.run(llm.acomplete("Why?"))

    async def stream() -> None:
        async for _ in await llm.astream_complete("Why?"):
            pass

    asyncio.run(stream())
    llm.complete("Already formatted.", formatted=True)
    sent = [r.json["messages"][-1]["content"] for r in emulator.requests]
    assert sent == ["Answer briefly. Why?"] * 4 + ["Already formatted."]


def test_messages_to_prompt_is_refused() -> None:
    with pytest.raises(ValidationError, match="messages_to_prompt would never be used"):
        TIRLlamaLLM(messages_to_prompt=lambda messages: "x")


# -- a short key ---------------------------------------------------------------------------------


# -- an empty stream ------------------------------------------------------------------------------


def weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


def test_an_empty_stream_with_tools_says_so_and_is_tried_twice(emulator: Emulator) -> None:
    emulator.queue(*[Reply(raw_events=[], no_done=True)] * 3)
    llm = make(emulator, max_retries=2)
    tool = FunctionTool.from_defaults(fn=weather)
    with pytest.raises(StreamInterruptedError) as caught:
        for _ in llm.stream_chat_with_tools([tool], user_msg="Weather in Pune?"):
            pass
    message = str(caught.value)
    assert "empty stream" in message and "cannot stream tool calls" in message
    assert "context" not in message  # nothing in the request points there
    assert len(emulator.requests) == 2  # once more, not max_retries more


def test_an_empty_stream_without_tools_claims_no_cause(emulator: Emulator) -> None:
    emulator.queue(*[Reply(raw_events=[], no_done=True)] * 3)
    with pytest.raises(StreamInterruptedError) as caught:
        list(make(emulator).stream_chat(user("hi")))
    assert "empty stream" in str(caught.value)
    assert "tool" not in str(caught.value) and "context" not in str(caught.value)
    assert len(emulator.requests) == 2


def test_several_choices_are_refused_before_any_request(emulator: Emulator) -> None:
    with pytest.raises(ValidationError, match="n=2 is not supported"):
        make(emulator, additional_kwargs={"n": 2})
    with pytest.raises(ValueError, match="n=3 is not supported"):
        make(emulator).complete("hi", n=3)
    assert emulator.requests == []
