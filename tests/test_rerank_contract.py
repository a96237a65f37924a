"""The adapter contract (`test_every_adapter.py`) for both `TIRRerank` classes.

The same checks as for the other four adapter classes, until these two join that file's list.
"""

from __future__ import annotations

import asyncio
import gc
import pickle
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode
from pydantic import ValidationError

from langchain_tir import TIRRerank as LangChainRerank
from llama_index_tir import TIRRerank as LlamaIndexRerank
from tests.conftest import TEST_KEY
from tests.support.rerank_emulator import RerankEmulator, shared_rerank_emulator
from tir_transport import (
    CONNECTION_FIELDS,
    AuthenticationError,
    TIRConnection,
    TIRRerankConnection,
)

CLASSES: list[type[Any]] = [LangChainRerank, LlamaIndexRerank]
IDS = ["langchain", "llama_index"]
KEY = "eyJhbGciOiJSUzI1NiJ9.payload.signature-0123456789abcdef"


@pytest.fixture
def emulator() -> Iterator[RerankEmulator]:
    yield from shared_rerank_emulator()


def build(cls: type[Any], emulator: RerankEmulator, **kwargs: Any) -> Any:
    return cls(api_key=TEST_KEY, base_url=emulator.base_url, model="reranker", **kwargs)


def call(instance: Any) -> list[Any]:
    """One request through the class's own sync API."""
    if isinstance(instance, LangChainRerank):
        return list(instance.compress_documents([Document(page_content="hi there")], "hi"))
    given = [NodeWithScore(node=TextNode(text="hi there"))]
    return list(instance.postprocess_nodes(given, query_str="hi"))


async def acall(instance: Any) -> list[Any]:
    if isinstance(instance, LangChainRerank):
        return list(await instance.acompress_documents([Document(page_content="hi there")], "hi"))
    return list(
        await instance.apostprocess_nodes(
            [NodeWithScore(node=TextNode(text="hi there"))], query_str="hi"
        )
    )


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize(
    "bad",
    [{"timeout": -1}, {"max_retries": "many"}, {"project_id": 1.5}, {"top_n": 0}],
    ids=["timeout", "max_retries", "project_id", "top_n"],
)
def test_a_validation_error_never_shows_the_key(cls: type[Any], bad: dict[str, Any]) -> None:
    with pytest.raises((ValidationError, ValueError)) as caught:
        cls(**bad, api_key=KEY)
    text = str(caught.value) + repr(caught.value)
    assert KEY not in text and "signature" not in text


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_every_class_has_the_whole_connection(cls: type[Any]) -> None:
    assert issubclass(cls, TIRRerankConnection) and issubclass(cls, TIRConnection)
    assert set(CONNECTION_FIELDS) <= set(cls.model_fields)
    assert {"model", "top_n", "batch_size", "max_concurrency"} <= set(cls.model_fields)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_the_environment_is_read_the_same_way(
    cls: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_TIR_ACCESS_TOKEN", "from-the-sdk-variable-123")
    monkeypatch.setenv("TIR_PROJECT_ID", "4242")
    monkeypatch.setenv("TIR_HOST", "https://tir.example.com")
    monkeypatch.setenv("TIR_RERANK_MODEL", "bge_reranker")
    instance = cls(request_timeout=7)
    assert instance.api_key.get_secret_value() == "from-the-sdk-variable-123"
    assert (instance.project_id, instance.host, instance.timeout, instance.model) == (
        "4242",
        "https://tir.example.com",
        7,
        "bge_reranker",
    )
    assert cls(project_id=7).project_id == "7"


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_bad_settings_fail_alike(cls: type[Any]) -> None:
    for bad in (
        {"timeout": 0},
        {"max_retries": -1},
        {"requests_per_minute": 0},
        {"batch_size": 0},
        {"max_concurrency": 0},
    ):
        with pytest.raises(ValidationError):
            cls(**bad)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_default_headers_go_with_every_request(cls: type[Any], emulator: RerankEmulator) -> None:
    instance = build(cls, emulator, default_headers={"X-Team": "search", "X-Trace": "t-1"})
    call(instance)
    asyncio.run(acall(instance))
    assert len(emulator.requests) == 2
    for request in emulator.requests:
        assert request.headers["x-team"] == "search" and request.headers["x-trace"] == "t-1"
        assert request.headers["authorization"] == f"Bearer {TEST_KEY}"


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_limits_hold(cls: type[Any], emulator: RerankEmulator) -> None:
    # max_in_flight is the instance's, across its batches: 2 even with 4 allowed per call.
    emulator.rerank_delay = 0.02
    instance = build(cls, emulator, max_in_flight=2, batch_size=1, max_concurrency=4)
    texts = [f"text {i}" for i in range(8)]
    if isinstance(instance, LangChainRerank):
        assert len(instance.rerank("text", texts)) == 8
    else:
        given = [NodeWithScore(node=TextNode(text=t)) for t in texts]
        instance.top_n = None
        assert len(instance.postprocess_nodes(given, query_str="text")) == 8
    assert len(emulator.requests) == 8 and emulator.max_in_flight == 2


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_your_own_http_clients_are_used_and_never_closed(
    cls: type[Any], emulator: RerankEmulator
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
    assert not sync_client.is_closed
    sync_client.close()


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_pickling_with_your_own_client_says_why_it_cannot(
    cls: type[Any], emulator: RerankEmulator
) -> None:
    with httpx.Client() as client:
        instance = build(cls, emulator, http_client=client)
        with pytest.raises(TypeError, match="own http_client"):
            pickle.dumps(instance)
    plain = pickle.loads(pickle.dumps(build(cls, emulator)))
    assert len(call(plain)) == 1
    assert len(emulator.requests) == 1


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_short_key_leaves_error_text_alone(cls: type[Any], emulator: RerankEmulator) -> None:
    emulator.require_key = "the-real-key-0123456789"
    instance = cls(api_key="k", base_url=emulator.base_url, max_retries=0, model="reranker")
    with pytest.raises(AuthenticationError, match="Invalid API key") as caught:
        call(instance)
    assert "*" not in str(caught.value)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_long_key_never_shows_in_a_failure(cls: type[Any], emulator: RerankEmulator) -> None:
    emulator.require_key = "the-real-key-0123456789"
    instance = cls(api_key=KEY, base_url=emulator.base_url, max_retries=0, model="reranker")
    for text in (repr(instance), str(instance.model_dump()), instance.model_dump_json()):
        assert KEY not in text
    with pytest.raises(AuthenticationError) as caught:
        call(instance)
    assert KEY not in str(caught.value) + repr(caught.value.args)
