"""TIRRerank beside LangChain's CohereRerank and CrossEncoderReranker.

`CohereRerank` (langchain-classic) runs over the same emulator through a small Cohere-shaped
client (the `cohere` package is not installed; vLLM's `/rerank` is Cohere-compatible, so the
client only posts the same body). `CrossEncoderReranker` scores with the emulator's own
scoring function, so both rank by the same scores. LlamaIndex has no installed peer: its
`TIRRerank` is held to what the LangChain one does (the same in both frameworks).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from langchain_classic.retrievers.document_compressors.cohere_rerank import CohereRerank
from langchain_classic.retrievers.document_compressors.cross_encoder import BaseCrossEncoder
from langchain_classic.retrievers.document_compressors.cross_encoder_rerank import (
    CrossEncoderReranker,
)
from langchain_core.documents import Document
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode

from langchain_tir import TIRRerank
from llama_index_tir import TIRRerank as LlamaIndexRerank
from tests.conftest import TEST_KEY
from tests.parity.sides import TIMEOUT, side_by_side
from tests.support.emulator import RERANK_MODEL, Emulator, rerank_score
from tir_transport import InputError

QUERY = "which river flows east"
TEXTS = [
    "The Ganga river flows east to the Bay of Bengal.",
    "Paris is the capital of France.",
    "The Narmada river flows west.",
    "   ",
    "Rivers in India flow east or west.",
]
BLANK = 3


class CohereShapedClient:
    """What `CohereRerank` calls (`client.rerank(...)`), posting to the emulator's /rerank."""

    def __init__(self, emulator: Emulator) -> None:
        self.url = f"{emulator.base_url}/rerank"

    def rerank(self, *, query: str, documents: list[str], model: str, top_n: Any, **_: Any) -> Any:
        body = {"model": model, "query": query, "documents": documents, "top_n": top_n}
        reply = httpx.post(self.url, json=body, timeout=TIMEOUT)
        reply.raise_for_status()
        return SimpleNamespace(results=[SimpleNamespace(**r) for r in reply.json()["results"]])


class WordOverlap(BaseCrossEncoder):
    """A cross-encoder that scores as the emulator's rerank model does."""

    def score(self, text_pairs: list[tuple[str, str]]) -> list[float]:
        return [rerank_score(query, document) for query, document in text_pairs]


def cohere(emulator: Emulator, **kwargs: Any) -> CohereRerank:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated in langchain-classic, still used
        return CohereRerank(client=CohereShapedClient(emulator), model=RERANK_MODEL, **kwargs)


def ours(emulator: Emulator, **kwargs: Any) -> TIRRerank:
    options = {"base_url": emulator.base_url, "api_key": TEST_KEY, "model": RERANK_MODEL}
    return TIRRerank(**{**options, **kwargs})


def documents(texts: Sequence[str] = TEXTS) -> list[Document]:
    return [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(texts)]


def ranked(docs: Sequence[Document]) -> list[tuple[int, float]]:
    return [(d.metadata["n"], d.metadata["relevance_score"]) for d in docs]


def test_compress_documents_same_order_and_scores(emulator: Emulator) -> None:
    given = documents([t for i, t in enumerate(TEXTS) if i != BLANK])
    peer, mine = side_by_side(
        emulator,
        lambda: cohere(emulator).compress_documents(given, QUERY),
        lambda: ours(emulator).compress_documents(given, QUERY),
    )
    assert peer.error is None and mine.error is None
    assert ranked(mine.value) == ranked(peer.value)
    assert len(mine.value) == 3


# -- a blank document never fails the call ----------------------------------------------------


@pytest.mark.parametrize("top_n", [3, None])
def test_a_blank_document_is_ranked_not_refused(emulator: Emulator, top_n: int | None) -> None:
    given = documents()
    peer, mine = side_by_side(
        emulator,
        lambda: cohere(emulator, top_n=top_n).compress_documents(given, QUERY),
        lambda: ours(emulator, top_n=top_n).compress_documents(given, QUERY),
    )
    assert peer.error is None and mine.error is None, repr(mine.error)
    assert ranked(mine.value) == ranked(peer.value)
    if top_n is None:
        assert ranked(mine.value)[-1] == (BLANK, 0.0)  # last, scored 0.0
    # Ours does not send it: nothing to score (the peer pays for the pair).
    assert "   " in peer.body["documents"] and "   " not in mine.body["documents"]


def test_a_blank_document_with_a_cross_encoder(emulator: Emulator) -> None:
    given = documents()
    peer = CrossEncoderReranker(model=WordOverlap(), top_n=len(TEXTS)).compress_documents(
        given, QUERY
    )
    mine = ours(emulator, top_n=len(TEXTS)).compress_documents(given, QUERY)
    assert [d.metadata["n"] for d in mine] == [d.metadata["n"] for d in peer]


def test_only_blank_documents_send_nothing(emulator: Emulator) -> None:
    given = documents(["", " \n"])
    assert ranked(ours(emulator).compress_documents(given, QUERY)) == [(0, 0.0), (1, 0.0)]
    assert emulator.requests == []


def _nodes(metadata: dict[str, str] | None = None) -> list[NodeWithScore]:
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in TEXTS]
    image = ImageNode(image_url="https://example.com/a.png", metadata=metadata or {})
    nodes[BLANK] = NodeWithScore(node=image, score=0.5)
    return nodes


@pytest.mark.parametrize("metadata", [None, {"file_path": "/data/which river flows east.png"}])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_llama_index_places_a_blank_node_as_langchain_does(
    emulator: Emulator, mode: str, metadata: dict[str, str] | None
) -> None:
    # An image node has no text to rank: the same place and score as a blank document. Also
    # with metadata (SimpleDirectoryReader's file_path): its embed text was sent and scored,
    # and it outranked real passages when the path matched the query.
    reranker = LlamaIndexRerank(
        base_url=emulator.base_url, api_key=TEST_KEY, model=RERANK_MODEL, top_n=None
    )
    bundle = QueryBundle(QUERY)
    if mode == "sync":
        nodes = reranker.postprocess_nodes(_nodes(metadata), bundle)
    else:
        nodes = asyncio.run(reranker.apostprocess_nodes(_nodes(metadata), bundle))
    expected = ranked(ours(emulator, top_n=None).compress_documents(documents(), QUERY))
    assert [
        (TEXTS.index(n.node.get_content()) if n.node.get_content() else BLANK, n.score)
        for n in nodes
    ] == expected


# -- CohereRerank's rerank(), top_n, nothing to rank -----------------------------------------------


@pytest.mark.parametrize("top_n", [2, -1, None])
def test_rerank_takes_cohere_arguments_and_gives_its_dicts(
    emulator: Emulator, top_n: int | None
) -> None:
    texts = [t for i, t in enumerate(TEXTS) if i != BLANK]
    peer, mine = side_by_side(
        emulator,
        lambda: cohere(emulator).rerank(texts, QUERY, top_n=top_n),
        lambda: ours(emulator).rerank(texts, QUERY, top_n=top_n),
    )
    assert peer.error is None and mine.error is None, repr(mine.error)
    assert mine.value == peer.value
    assert len(mine.value) == {2: 2, -1: 3, None: 4}[top_n]


def test_arerank_takes_cohere_arguments(emulator: Emulator) -> None:
    texts = [t for i, t in enumerate(TEXTS) if i != BLANK]
    expected = cohere(emulator).rerank(texts, QUERY, top_n=2)
    assert asyncio.run(ours(emulator).arerank(texts, QUERY, top_n=2)) == expected


def test_nothing_to_rank_needs_no_model(emulator: Emulator) -> None:
    # CohereRerank returns [] for no documents; ours too, before asking for its settings.
    assert cohere(emulator).compress_documents([], QUERY) == []
    assert TIRRerank().compress_documents([], QUERY) == []
    assert asyncio.run(TIRRerank().acompress_documents([], QUERY)) == []
    assert TIRRerank().rerank([], QUERY) == []


def test_top_n_zero_keeps_none(emulator: Emulator) -> None:
    # CrossEncoderReranker (and LlamaIndex's own rerankers) keep none for top_n=0.
    given = documents()
    assert CrossEncoderReranker(model=WordOverlap(), top_n=0).compress_documents(given, QUERY) == []
    assert ours(emulator, top_n=0).compress_documents(given, QUERY) == []
    reranker = LlamaIndexRerank(
        base_url=emulator.base_url, api_key=TEST_KEY, model=RERANK_MODEL, top_n=0
    )
    assert reranker.postprocess_nodes(_nodes(), QueryBundle(QUERY)) == []
    assert emulator.requests == []


def test_rerank_takes_cohere_keywords(emulator: Emulator) -> None:
    # CohereRerank.rerank(documents, query, *, model=None, top_n=-1, max_chunks_per_doc=None)
    texts = [t for i, t in enumerate(TEXTS) if i != BLANK]
    peer, mine = side_by_side(
        emulator,
        lambda: cohere(emulator).rerank(texts, QUERY, model=None, max_chunks_per_doc=None),
        lambda: ours(emulator).rerank(
            texts, QUERY, model=RERANK_MODEL, top_n=-1, max_chunks_per_doc=None
        ),
    )
    assert peer.error is None and mine.error is None, repr(mine.error)
    assert mine.value == peer.value


@pytest.mark.parametrize(
    "call",
    [
        {"model": "another-reranker"},  # one client serves one model
        {"max_chunks_per_doc": 2},  # TIR's models score a document whole
    ],
    ids=["another model", "max_chunks_per_doc"],
)
def test_rerank_refuses_what_it_cannot_do(emulator: Emulator, call: dict[str, Any]) -> None:
    with pytest.raises(InputError, match=next(iter(call))):
        ours(emulator).rerank(list(TEXTS[:2]), QUERY, **call)
    assert emulator.requests == []


def test_rerank_refuses_documents_given_as_one_string(emulator: Emulator) -> None:
    # Both arguments strings: ranking the characters of "Pune is in India." is never meant.
    with pytest.raises(InputError, match="one string"):
        ours(emulator).rerank("The Ganga flows east.", QUERY)
    assert emulator.requests == []


@pytest.mark.parametrize("order", ["cohere", "older"])
def test_rerank_top_n_zero_keeps_none_in_either_order(emulator: Emulator, order: str) -> None:
    # CohereRerank takes 0 as "the instance's top_n"; CrossEncoderReranker, LlamaIndex and
    # compress_documents keep none for 0, and so does every call of ours.
    texts = list(TEXTS[:3])
    reranker = ours(emulator)
    if order == "cohere":
        assert reranker.rerank(texts, QUERY, top_n=0) == []
    else:
        assert reranker.rerank(QUERY, texts, top_n=0) == []
    assert emulator.requests == []
