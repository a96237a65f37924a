"""Checks that hold for every adapter class alike: the same promise, four classes."""

from __future__ import annotations

import asyncio
import gc
import pickle
import time
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from langchain_tir import ChatTIRLlama, TIREmbeddings
from llama_index_tir import TIREmbedding, TIRLlamaLLM
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator
from tests.support.timing import assert_token_bucket
from tir_transport import CONNECTION_FIELDS, AuthenticationError, TIRConnection

CLASSES: list[type[Any]] = [ChatTIRLlama, TIREmbeddings, TIRLlamaLLM, TIREmbedding]
IDS = [c.__name__ for c in CLASSES]
# Long and JWT-like: a validation error that quoted the arguments would show its tail.
KEY = "eyJhbGciOiJSUzI1NiJ9.payload.signature-0123456789abcdef"


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize(
    "bad",
    [{"timeout": -1}, {"max_retries": "many"}, {"project_id": 1.5}, {"max_in_flight": 0}],
    ids=["timeout", "max_retries", "project_id", "max_in_flight"],
)
def test_a_validation_error_never_shows_the_key(cls: type[Any], bad: dict[str, Any]) -> None:
    with pytest.raises((ValidationError, ValueError)) as caught:
        cls(**bad, api_key=KEY)  # the key last: where a quoted dict would end
    text = str(caught.value) + repr(caught.value)
    assert KEY not in text and "signature" not in text


@pytest.mark.parametrize("cls", [ChatTIRLlama, TIRLlamaLLM], ids=["ChatTIRLlama", "TIRLlamaLLM"])
def test_a_refused_argument_never_shows_the_key(cls: type[Any]) -> None:
    for bad in ({"temprature": 0}, {"n": 2}):
        with pytest.raises(ValidationError) as caught:
            cls(**bad, api_key=KEY)
        assert "signature" not in str(caught.value)


@pytest.mark.parametrize("cls", [ChatTIRLlama, TIRLlamaLLM], ids=["ChatTIRLlama", "TIRLlamaLLM"])
def test_unknown_arguments_are_request_fields_or_errors(cls: type[Any]) -> None:
    extra = "model_kwargs" if cls is ChatTIRLlama else "additional_kwargs"
    with pytest.warns(UserWarning, match=f"'top_k' is not an argument of {cls.__name__}"):
        llm = cls(top_k=5)
    assert getattr(llm, extra) == {"top_k": 5}
    with pytest.raises(ValidationError, match="did you mean 'temperature'"):
        cls(temprature=0)


# -- one connection model: the same settings, read the same way, by every class -----------------


def build(cls: type[Any], emulator: Emulator, **kwargs: Any) -> Any:
    extra = {"model": "e5"} if cls in (TIREmbeddings, TIREmbedding) else {}
    return cls(api_key=TEST_KEY, base_url=emulator.base_url, **extra, **kwargs)


def call(instance: Any) -> None:
    """One request through the class's own sync API."""
    if isinstance(instance, ChatTIRLlama):
        instance.invoke("hi")
    elif isinstance(instance, TIRLlamaLLM):
        instance.complete("hi")
    elif isinstance(instance, TIREmbeddings):
        instance.embed_documents(["hi"])
    else:
        instance.get_text_embedding_batch(["hi"])


async def acall(instance: Any) -> None:
    if isinstance(instance, ChatTIRLlama):
        await instance.ainvoke("hi")
    elif isinstance(instance, TIRLlamaLLM):
        await instance.acomplete("hi")
    elif isinstance(instance, TIREmbeddings):
        await instance.aembed_documents(["hi"])
    else:
        await instance.aget_text_embedding_batch(["hi"])


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_every_class_has_the_whole_connection(cls: type[Any]) -> None:
    assert issubclass(cls, TIRConnection)
    assert set(CONNECTION_FIELDS) <= set(cls.model_fields)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_the_environment_is_read_the_same_way(
    cls: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_TIR_ACCESS_TOKEN", "from-the-sdk-variable-123")
    monkeypatch.setenv("TIR_PROJECT_ID", "4242")
    monkeypatch.setenv("TIR_HOST", "https://tir.example.com")
    monkeypatch.setenv("TIR_EMBEDDING_MODEL", "e5")
    instance = cls(request_timeout=7)
    assert instance.api_key.get_secret_value() == "from-the-sdk-variable-123"
    assert (instance.project_id, instance.host, instance.timeout) == (
        "4242",
        "https://tir.example.com",
        7,
    )
    assert cls(project_id=7).project_id == "7"  # given wins, ints welcome


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_bad_settings_fail_alike(cls: type[Any]) -> None:
    for bad in ({"timeout": 0}, {"max_retries": -1}, {"requests_per_minute": 0}):
        with pytest.raises(ValidationError):
            cls(**bad)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_default_headers_go_with_every_request(cls: type[Any], emulator: Emulator) -> None:
    instance = build(cls, emulator, default_headers={"X-Team": "search", "X-Trace": "t-1"})
    call(instance)
    asyncio.run(acall(instance))
    assert len(emulator.requests) == 2
    for request in emulator.requests:
        assert request.headers["x-team"] == "search" and request.headers["x-trace"] == "t-1"
        assert request.headers["authorization"] == f"Bearer {TEST_KEY}"


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_your_own_http_clients_are_used_and_never_closed(
    cls: type[Any], emulator: Emulator
) -> None:
    seen: list[str] = []

    def hook(request: httpx.Request) -> None:
        seen.append("sync")

    async def ahook(request: httpx.Request) -> None:
        seen.append("async")

    sync_client = httpx.Client(event_hooks={"request": [hook]})

    async def main() -> None:
        async_client = httpx.AsyncClient(event_hooks={"request": [ahook]})
        instance = build(cls, emulator, http_client=sync_client, http_async_client=async_client)
        call(instance)
        await acall(instance)
        del instance
        gc.collect()
        assert not async_client.is_closed
        await async_client.aclose()

    asyncio.run(main())
    assert seen == ["sync", "async"]
    assert not sync_client.is_closed  # ours to close, not the library's
    sync_client.close()


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_pickling_with_your_own_client_says_why_it_cannot(
    cls: type[Any], emulator: Emulator
) -> None:
    with httpx.Client() as client:
        instance = build(cls, emulator, http_client=client)
        with pytest.raises(TypeError, match="own http_client"):
            pickle.dumps(instance)
    plain = pickle.loads(pickle.dumps(build(cls, emulator)))
    call(plain)
    assert len(emulator.requests) == 1


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_short_key_leaves_error_text_alone(cls: type[Any], emulator: Emulator) -> None:
    # A key "k" scrubbed everywhere would turn the server's "Invalid API key" into
    # "Invalid API **********ey" (and "tokens" into "to**********ens").
    emulator.require_key = "the-real-key-0123456789"
    extra = {"model": "e5"} if cls in (TIREmbeddings, TIREmbedding) else {}
    instance = cls(api_key="k", base_url=emulator.base_url, max_retries=0, **extra)
    with pytest.raises(AuthenticationError, match="Invalid API key") as caught:
        call(instance)
    assert "*" not in str(caught.value)


@pytest.mark.timing
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_requests_per_minute_paces_every_class(
    cls: type[Any], emulator: Emulator, mode: str
) -> None:
    # 4 per second, bursts of 4: slower than any class sends unpaced, so that a pace that is
    # not kept shows (each class's own cost per request is well under 250 ms).
    instance = build(cls, emulator, requests_per_minute=240)
    started = time.monotonic()
    if mode == "sync":
        for _ in range(8):
            call(instance)
    else:

        async def run() -> None:
            await asyncio.gather(*(acall(instance) for _ in range(8)))

        asyncio.run(run())
    starts = emulator.starts(8)
    assert len(starts) == 8
    # The 4 of the burst at once, then one every 250 ms: the 8th no sooner than 1 s in.
    assert_token_bucket(starts, started, burst=4, per_second=4.0)
