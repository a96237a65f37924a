"""Every embeddings fault through both adapters, sync and async, against the emulator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from langchain_tir import TIREmbeddings
from llama_index_tir import TIREmbedding
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply, embed_vector
from tir_transport import (
    ContextLengthExceededError,
    InputError,
    InvalidResponseError,
    RateLimitError,
    ServerError,
)

# Run on both engines (urllib3/aiohttp and httpx): the behaviour must not depend on it.
pytestmark = pytest.mark.usefixtures("http_engine")

ADAPTERS = ["langchain", "llamaindex"]
MODES = ["sync", "async"]


def embed(adapter: str, mode: str, texts: list[Any], **options: Any) -> list[list[float]]:
    settings = {"api_key": TEST_KEY, "model": "e5", "timeout": 5, **options}
    if adapter == "langchain":
        lc = TIREmbeddings(**settings)
        if mode == "sync":
            return lc.embed_documents(texts)
        return asyncio.run(lc.aembed_documents(texts))
    if "batch_size" in settings:
        settings["embed_batch_size"] = settings.pop("batch_size")
    li = TIREmbedding(**settings)
    if mode == "sync":
        return li.get_text_embedding_batch(texts)
    return asyncio.run(li.aget_text_embedding_batch(texts))


@pytest.fixture(params=[(a, m) for a in ADAPTERS for m in MODES], ids=lambda p: f"{p[0]}-{p[1]}")
def way(request: pytest.FixtureRequest) -> tuple[str, str]:
    value: tuple[str, str] = request.param
    return value


def test_retries_429_and_5xx(emulator: Emulator, way: tuple[str, str]) -> None:
    emulator.queue_embeddings(
        Reply(status=429, headers={"retry-after": "0"}),
        Reply(status=503, headers={"retry-after": "0"}),
    )
    assert embed(*way, ["a b"], base_url=emulator.base_url) == [embed_vector("a b")]
    assert len(emulator.requests) == 3


@pytest.mark.parametrize(("status", "error"), [(429, RateLimitError), (500, ServerError)])
def test_errors_after_the_last_retry(
    emulator: Emulator, way: tuple[str, str], status: int, error: type[Exception]
) -> None:
    emulator.queue_embeddings(*[Reply(status=status, headers={"retry-after": "0"})] * 2)
    with pytest.raises(error):
        embed(*way, ["a"], base_url=emulator.base_url, max_retries=1)


def test_short_reply(emulator: Emulator, way: tuple[str, str]) -> None:
    emulator.queue_embeddings(Reply(short_by=1))
    with pytest.raises(InvalidResponseError, match="2 vectors for 3 texts"):
        embed(*way, ["a", "b", "c"], base_url=emulator.base_url)


def test_missing_index(emulator: Emulator, way: tuple[str, str]) -> None:
    emulator.queue_embeddings(Reply(drop_index=True))
    with pytest.raises(InvalidResponseError, match="no valid index"):
        embed(*way, ["a", "b"], base_url=emulator.base_url)


def test_base64_ignored_or_rejected(emulator: Emulator, way: tuple[str, str]) -> None:
    emulator.embed_ignore_base64 = True
    assert embed(*way, ["x y"], base_url=emulator.base_url) == [embed_vector("x y")]
    emulator.embed_ignore_base64 = False
    emulator.embed_reject_base64 = True
    assert embed(*way, ["x y"], base_url=emulator.base_url) == [embed_vector("x y")]
    formats = [r.json["encoding_format"] for r in emulator.requests]
    assert formats == ["base64", "base64", "float"]


def test_too_long_input_named(emulator: Emulator, way: tuple[str, str]) -> None:
    emulator.embed_max_tokens = 6
    texts = ["fine"] * 9
    texts[7] = "this text has far too many words in it"
    with pytest.raises(ContextLengthExceededError) as info:
        embed(*way, texts, base_url=emulator.base_url, batch_size=4)
    assert info.value.input_index == 7
    assert "text 7 (of the 9 given" in str(info.value)


def test_truncation_opt_in(emulator: Emulator, way: tuple[str, str]) -> None:
    emulator.embed_max_tokens = 6
    text = "this text has far too many words in it"
    vectors = embed(*way, [text], base_url=emulator.base_url, truncate_prompt_tokens=6)
    assert len(vectors) == 1
    assert emulator.requests[0].json["truncate_prompt_tokens"] == 6


@pytest.mark.parametrize("bad", ["", "  \n", 42], ids=["empty", "blank", "int"])
def test_bad_inputs(emulator: Emulator, way: tuple[str, str], bad: Any) -> None:
    with pytest.raises(InputError, match="text 1 is"):
        embed(*way, ["ok", bad], base_url=emulator.base_url)
    assert emulator.requests == []
