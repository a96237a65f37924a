"""What a user meets first, through the core and both adapters.

Numeric ids, every missing setting named at once, usage that is never counted as zero when
unknown, 401/404 errors that say what to do, any GenAI model by its API name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk
from llama_index.core.base.llms.types import ChatMessage
from pydantic import ValidationError

from langchain_tir import ChatTIRLlama
from llama_index_tir import TIRLlamaLLM
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply
from tir_transport import (
    AuthenticationError,
    ChatClient,
    ConfigurationError,
    NotFoundError,
    TIRConfig,
    TIRError,
    build_payload,
    track_usage,
)

KINDS = ["core", "langchain", "llamaindex"]


def ask(kind: str, mode: str, **options: Any) -> str:
    """One chat request through `kind` (sync or async); returns the reply's text."""
    if kind == "core":
        client = ChatClient(TIRConfig.from_env(**options))
        body = build_payload([{"role": "user", "content": "hi"}], client.config.model)
        if mode == "sync":
            return client.create(body).text or ""
        return asyncio.run(client.acreate(body)).text or ""
    if kind == "langchain":
        llm = ChatTIRLlama(**options)
        message = llm.invoke("hi") if mode == "sync" else asyncio.run(llm.ainvoke("hi"))
        return message.text
    li = TIRLlamaLLM(**options)
    messages = [ChatMessage(role="user", content="hi")]
    reply = li.chat(messages) if mode == "sync" else asyncio.run(li.achat(messages))
    return reply.message.content or ""


def build(kind: str, **options: Any) -> object:
    """Construct (only) the configured object of `kind`."""
    if kind == "core":
        return TIRConfig.from_env(**options)
    if kind == "langchain":
        return ChatTIRLlama(**options)
    return TIRLlamaLLM(**options)


# -- 1. numeric ids -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", KINDS)
def test_numeric_project_and_endpoint_ids(emulator: Emulator, kind: str, mode: str) -> None:
    ask(kind, mode, api_key=TEST_KEY, project_id=4242, host=emulator.url, timeout=5)
    ask(kind, mode, api_key=TEST_KEY, project_id=4242, endpoint_id=9001, host=emulator.url)
    genai, endpoint = emulator.requests
    assert genai.path == "/project/p-4242/genai/llama3_1_8b_instruct/v1/chat/completions"
    assert endpoint.path == "/project/p-4242/endpoint/is-9001/v1/chat/completions"
    assert genai.query == endpoint.query == {"project_id": ["4242"]}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["project_id", "endpoint_id"])
@pytest.mark.parametrize("bad", [42.5, True, ["42"]], ids=["float", "bool", "list"])
def test_other_id_types_get_an_error_naming_the_parameter(kind: str, name: str, bad: Any) -> None:
    with pytest.raises((ConfigurationError, ValidationError)) as info:
        build(kind, **{name: bad})
    assert f"{name} must be an int or a str" in str(info.value)


def test_numeric_ids_from_the_cli(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from tir_llama.cli import main

    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    out = io.StringIO()
    argv = ["--host", emulator.url, "--project-id", "4242", "--endpoint-id", "9001", "doctor"]
    assert main(argv, out) == 0, out.getvalue()
    assert emulator.requests[0].path == "/project/p-4242/endpoint/is-9001/v1/chat/completions"


# -- 2. every missing setting at once -------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", KINDS)
def test_nothing_configured_names_every_missing_setting(kind: str, mode: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ask(kind, mode)
    message = str(info.value)
    for name in ("TIR_API_KEY", "TIR_PROJECT_ID", "TIR_BASE_URL"):
        assert name in message


@pytest.mark.parametrize("kind", KINDS)
def test_only_what_is_missing_is_named(emulator: Emulator, kind: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ask(kind, "sync", project_id=7, host=emulator.url)
    assert "TIR_API_KEY" in str(info.value)
    assert "TIR_PROJECT_ID" not in str(info.value)
    assert emulator.requests == []


@pytest.mark.parametrize("kind", KINDS)
def test_an_openai_key_left_set_is_said_to_be_unread(
    emulator: Emulator, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A program moved from ChatOpenAI keeps OPENAI_API_KEY: "set TIR_API_KEY" alone left
    # people wondering why the key they had was not taken.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError) as info:
        ask(kind, "sync", project_id=7, host=emulator.url)
    assert "OPENAI_API_KEY" not in str(info.value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-9c1f")
    with pytest.raises(ConfigurationError) as info:
        ask(kind, "sync", project_id=7, host=emulator.url)
    assert "OPENAI_API_KEY is not read on purpose" in str(info.value)
    assert "sk-openai-9c1f" not in str(info.value)
    assert emulator.requests == []


def test_doctor_names_every_missing_setting() -> None:
    import io

    from tir_llama.cli import main

    out = io.StringIO()
    assert main(["doctor"], out) == 2
    text = out.getvalue()
    assert "missing:     an API key: set TIR_API_KEY" in text
    assert "missing:     a project id: set TIR_PROJECT_ID" in text


# -- 3. unknown usage is not zero usage -----------------------------------------------------


def test_tracker_counts_requests_without_usage(emulator: Emulator) -> None:
    client = ChatClient(TIRConfig.from_env(api_key=TEST_KEY, base_url=emulator.base_url))
    body = build_payload([{"role": "user", "content": "hi"}], "m1")
    emulator.queue(Reply(prompt_tokens=5, completion_tokens=2), Reply(no_usage=True))
    with track_usage() as usage:
        client.create(body)
        client.create({**body, "model": "m2"})
        list(client.stream({**body, "stream": True, "model": "m2"}))  # no include_usage asked
    assert usage.requests == 3
    assert usage.requests_without_usage == 2
    assert usage.requests_without_usage_by_model == {"m2": 2}
    assert (usage.input_tokens, usage.output_tokens) == (5, 2)
    assert "2 of 3 requests reported no usage" in usage.summary()
    assert "requests_without_usage=2" in repr(usage)


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_langchain_usage_metadata_absent_when_unknown(emulator: Emulator, stream: bool) -> None:
    llm = ChatTIRLlama(api_key=TEST_KEY, base_url=emulator.base_url)
    emulator.queue(Reply(no_usage=True))
    with track_usage() as usage:
        if stream:
            chunks = list(llm.stream("hi"))
            message: Any = chunks[0]
            for chunk in chunks[1:]:
                message = message + chunk
            assert isinstance(message, AIMessageChunk)
        else:
            message = llm.invoke("hi")
    assert message.usage_metadata is None
    assert usage.requests_without_usage == 1


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream_chat"])
def test_llamaindex_counts_absent_when_unknown(emulator: Emulator, stream: bool) -> None:
    llm = TIRLlamaLLM(api_key=TEST_KEY, base_url=emulator.base_url)
    emulator.queue(Reply(no_usage=True))
    messages = [ChatMessage(role="user", content="hi")]
    with track_usage() as usage:
        last = list(llm.stream_chat(messages))[-1] if stream else llm.chat(messages)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert key not in last.additional_kwargs
    assert usage.requests_without_usage == 1


def test_cli_chat_says_when_usage_is_unknown(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    from tir_llama.cli import main

    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\nagain\n\n"))
    emulator.queue(
        Reply(text="Hi.", no_usage=True), Reply(text="Yes.", prompt_tokens=3, completion_tokens=2)
    )
    out = io.StringIO()
    assert main(["--base-url", emulator.base_url, "chat"], out) == 0
    text = out.getvalue()
    assert "Hi.\n[the server reported no usage]" in text
    assert "Yes.\n[3 in, 2 out]" in text


# -- 4. errors that say what to do ----------------------------------------------------------


def _raise_with(kind: str, mode: str, **options: Any) -> TIRError:
    with pytest.raises(TIRError) as info:  # each test names the class it expects
        ask(kind, mode, api_key=TEST_KEY, project_id=42, timeout=5, max_retries=0, **options)
    return info.value


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", KINDS)
def test_401_says_the_token_may_have_expired(emulator: Emulator, kind: str, mode: str) -> None:
    emulator.queue(Reply(status=401, message="Invalid token"))
    error = _raise_with(kind, mode, host=emulator.url)
    assert isinstance(error, AuthenticationError)
    text = str(error)
    assert "expired" in text and "365 days" in text and "API Tokens" in text
    assert "The server said: Invalid token" in text
    assert TEST_KEY not in text


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", KINDS)
def test_404_on_a_genai_url_names_the_model(emulator: Emulator, kind: str, mode: str) -> None:
    emulator.queue(Reply(status=404, message="Not Found"))
    error = _raise_with(kind, mode, host=emulator.url, model="llama_9_huge")
    assert isinstance(error, NotFoundError)
    assert "'llama_9_huge'" in str(error)
    assert "API name on the model's page in TIR" in str(error)


@pytest.mark.parametrize("kind", KINDS)
def test_404_on_an_endpoint_url_names_the_endpoint(emulator: Emulator, kind: str) -> None:
    emulator.queue(Reply(status=404, message="Not Found"))
    error = _raise_with(kind, "sync", host=emulator.url, endpoint_id=9001)
    assert isinstance(error, NotFoundError)
    assert "is-9001 in project p-42" in str(error)


def test_404_on_a_base_url_adds_no_guess(emulator: Emulator) -> None:
    emulator.queue(Reply(status=404, message="Not Found"))
    error = _raise_with("core", "sync", base_url=emulator.base_url)
    assert str(error).startswith("Not Found (HTTP 404)")


# -- 5. any GenAI model by its API name -----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model", ["deepseek_v3", "llama_4_scout_17b_16e_instruct", "brand_new"])
def test_any_genai_model_by_api_name(emulator: Emulator, kind: str, model: str) -> None:
    ask(kind, "sync", api_key=TEST_KEY, project_id=42, host=emulator.url, model=model)
    request = emulator.requests[0]
    assert request.path == f"/project/p-42/genai/{model}/v1/chat/completions"
    assert request.json["model"] == model


@pytest.mark.parametrize(
    ("model", "window"),
    [("llama3_1_8b_instruct", 131072), ("deepseek_v3", 131072), ("brand_new", None)],
)
def test_profile_knows_some_models_and_guesses_none(model: str, window: int | None) -> None:
    profile: Callable[[], Any] = ChatTIRLlama(model=model)._resolve_model_profile
    assert profile().get("max_input_tokens") == window
    assert profile()["tool_calling"] is True
