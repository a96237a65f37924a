"""llama_index_tir.TIRRerank: a node postprocessor, its events, and a query engine end to end.

Against the emulator's rerank route (word-overlap scores, so the order is known); the query
engine's embeddings and chat go to the same emulator.
"""

from __future__ import annotations

import asyncio
import json
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index_instrumentation import get_dispatcher
from pydantic import ValidationError

from llama_index_tir import TIREmbedding, TIRLlamaLLM, TIRRerank
from tests.conftest import TEST_KEY
from tests.support.emulator import (
    Emulator,
    Reply,
    RerankReply,
    rerank_score,
    rerank_tokens,
)
from tir_transport import ConfigurationError, InputError, InvalidResponseError, track_usage

MODEL = "bge_reranker_v2_m3"
QUERY = "Which river flows east into the Bay of Bengal?"
PASSAGES = [
    "The Narmada flows west into the Arabian Sea.",
    "Paris is the capital of France.",
    "The Ganga flows east into the Bay of Bengal.",
    "The Godavari river flows east.",
    "Bananas are yellow fruit.",
]


@pytest.fixture(params=["sync", "async"], ids=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def reranker(emulator: Emulator) -> TIRRerank:
    return TIRRerank(api_key=TEST_KEY, base_url=emulator.base_url, model=MODEL)


def nodes(texts: list[str]) -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=0.5) for i, t in enumerate(texts)
    ]


def run(reranker: TIRRerank, mode: str, given: list[NodeWithScore], **kw: Any) -> Any:
    if mode == "sync":
        return reranker.postprocess_nodes(given, **kw)
    return asyncio.run(reranker.apostprocess_nodes(given, **kw))


def by_score(query: str, texts: list[str]) -> list[str]:
    order = sorted(range(len(texts)), key=lambda i: (-rerank_score(query, texts[i]), i))
    return [texts[i] for i in order]


def test_is_a_node_postprocessor() -> None:
    assert issubclass(TIRRerank, BaseNodePostprocessor)
    assert TIRRerank(model=MODEL).top_n == 3 and TIRRerank.class_name() == "TIRRerank"


def test_returns_the_best_with_their_scores(
    reranker: TIRRerank, emulator: Emulator, mode: str
) -> None:
    given = nodes(PASSAGES)
    best = run(reranker, mode, given, query_str=QUERY)
    assert [n.node.get_content() for n in best] == by_score(QUERY, PASSAGES)[:3]
    assert [n.node.node_id for n in best] == ["n2", "n3", "n0"]
    assert [n.score for n in best] == [rerank_score(QUERY, n.node.get_content()) for n in best]
    assert all(n.score == 0.5 for n in given)  # the caller's nodes keep their scores
    assert emulator.requests[0].json == {
        "model": MODEL,
        "query": QUERY,
        "documents": PASSAGES,
        "top_n": 3,
    }


def test_nodes_are_scored_on_their_content_as_embedded(
    reranker: TIRRerank, emulator: Emulator
) -> None:
    # Metadata the embedding sees goes with the text, as LlamaIndex's other rerankers send it.
    node = TextNode(text="The Ganga flows east.", metadata={"source": "rivers.md"})
    hidden = TextNode(
        text="Paris.", metadata={"secret": "x"}, excluded_embed_metadata_keys=["secret"]
    )
    reranker.postprocess_nodes(
        [NodeWithScore(node=node), NodeWithScore(node=hidden)], query_str=QUERY
    )
    sent = emulator.requests[0].json["documents"]
    assert "source: rivers.md" in sent[0] and "The Ganga flows east." in sent[0]
    assert sent[1] == "Paris."


def test_many_nodes_in_batches_merged_by_score(emulator: Emulator, mode: str) -> None:
    texts = [
        f"note {i} on {'the Ganga river flows east' if i % 9 == 4 else 'other things'}"
        for i in range(50)
    ]
    reranker = TIRRerank(
        api_key=TEST_KEY,
        base_url=emulator.base_url,
        model=MODEL,
        top_n=4,
        batch_size=16,
        max_concurrency=2,
    )
    best = run(reranker, mode, nodes(texts), query_str=QUERY)
    assert [n.node.get_content() for n in best] == by_score(QUERY, texts)[:4]
    assert sorted(len(r.json["documents"]) for r in emulator.requests) == [2, 16, 16, 16]
    assert emulator.max_in_flight <= 2


def test_without_a_query_it_says_how_to_give_one(reranker: TIRRerank, mode: str) -> None:
    with pytest.raises(ValueError, match="query_str="):
        run(reranker, mode, nodes(PASSAGES))


def test_no_nodes_no_request(reranker: TIRRerank, emulator: Emulator, mode: str) -> None:
    assert run(reranker, mode, [], query_str=QUERY) == []
    assert emulator.requests == []


def test_errors_name_the_node(reranker: TIRRerank, emulator: Emulator, mode: str) -> None:
    with pytest.raises(InputError, match="query is empty"):
        run(reranker, mode, nodes(["fine", "also fine"]), query_str="  ")
    assert emulator.requests == []
    emulator.queue_rerank(RerankReply(index_out_of_range=True))
    with pytest.raises(InvalidResponseError, match="no valid index"):
        run(reranker, mode, nodes(PASSAGES), query_str=QUERY)


@pytest.fixture
def recorded() -> Iterator[list[BaseEvent]]:
    """Every instrumentation event fired while the test runs."""
    seen: list[BaseEvent] = []

    class Collect(BaseEventHandler):
        def handle(self, event: BaseEvent, **kwargs: Any) -> None:
            seen.append(event)

    handler = Collect()
    get_dispatcher().add_event_handler(handler)
    try:
        yield seen
    finally:
        get_dispatcher().event_handlers.remove(handler)


def test_callback_and_instrumentation_events(
    emulator: Emulator, recorded: list[BaseEvent], mode: str
) -> None:
    debug = LlamaDebugHandler()
    reranker = TIRRerank(
        api_key=TEST_KEY,
        base_url=emulator.base_url,
        model=MODEL,
        top_n=2,
        callback_manager=CallbackManager([debug]),
    )
    given = nodes(PASSAGES)
    best = run(reranker, mode, given, query_str=QUERY)
    (pair,) = debug.get_event_pairs(CBEventType.RERANKING)
    start, end = pair
    assert start.payload is not None and end.payload is not None
    assert start.payload["nodes"] == given and start.payload["query_str"] == QUERY
    assert (start.payload["model_name"], start.payload["top_k"]) == (MODEL, 2)
    assert end.payload["nodes"] == best
    starts = [e for e in recorded if isinstance(e, ReRankStartEvent)]
    ends = [e for e in recorded if isinstance(e, ReRankEndEvent)]
    assert len(starts) == len(ends) == 1
    assert (starts[0].model_name, starts[0].top_n, starts[0].nodes) == (MODEL, 2, given)
    assert ends[0].nodes == best


def test_a_missing_model_names_the_variable(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    reranker = TIRRerank(api_key=TEST_KEY, base_url=emulator.base_url)
    with pytest.raises(ConfigurationError, match="TIR_RERANK_MODEL"):
        reranker.postprocess_nodes(nodes(["x"]), query_str="q")
    monkeypatch.setenv("TIR_RERANK_MODEL", "env_reranker")
    assert TIRRerank().model == "env_reranker"


def test_bad_settings_are_refused() -> None:
    for bad in ({"top_n": -1}, {"batch_size": 0}, {"max_concurrency": 0}):
        with pytest.raises(ValidationError):
            TIRRerank(model=MODEL, **bad)


def test_key_hidden_and_picklable(reranker: TIRRerank) -> None:
    for text in (repr(reranker), str(reranker.to_dict()), reranker.to_json()):
        assert TEST_KEY not in text
    assert reranker.to_dict()["class_name"] == "TIRRerank"
    copy = pickle.loads(pickle.dumps(reranker))
    best = copy.postprocess_nodes(nodes(PASSAGES), query_str=QUERY)
    assert best[0].node.get_content() == PASSAGES[2]


CORPUS = [
    *PASSAGES,
    "The Ganga is a river of India.",
    "River cruises on the Rhine flow past castles.",
    "East of the Bay lies Myanmar.",
    "The Brahmaputra joins the Ganga before the Bay of Bengal.",
    "Rice grows in the Ganga delta.",
    "Kolkata stands on the Hooghly, a Ganga distributary.",
    "Which trains go east from Delhi?",
    "The Yamuna flows into the Ganga at Prayagraj.",
]


def test_in_a_query_engine(emulator: Emulator, mode: str) -> None:
    index = VectorStoreIndex.from_documents(
        [Document(text=t) for t in CORPUS],
        embed_model=TIREmbedding(api_key=TEST_KEY, base_url=emulator.base_url, model="e5"),
    )
    engine = index.as_query_engine(
        llm=TIRLlamaLLM(api_key=TEST_KEY, base_url=emulator.base_url),
        similarity_top_k=12,
        node_postprocessors=[
            TIRRerank(api_key=TEST_KEY, base_url=emulator.base_url, model=MODEL, top_n=2)
        ],
    )
    emulator.queue(Reply(text="The Ganga."))
    with track_usage() as usage:
        response = engine.query(QUERY) if mode == "sync" else asyncio.run(engine.aquery(QUERY))
    assert str(response) == "The Ganga."
    (rerank_request,) = emulator.rerank_requests()
    wide = rerank_request.json["documents"]
    assert len(wide) == 12  # retrieved wide ...
    kept = by_score(QUERY, wide)[:2]  # ... answered from the best two
    assert [n.node.get_content() for n in response.source_nodes] == kept
    assert kept[0] == "The Ganga flows east into the Bay of Bengal."
    assert [n.score for n in response.source_nodes] == [rerank_score(QUERY, t) for t in kept]
    (chat,) = [r for r in emulator.requests if r.path.endswith("/chat/completions")]
    sent = json.dumps(chat.json["messages"])
    assert all(t in sent for t in kept)
    assert all(t not in sent for t in by_score(QUERY, wide)[2:])
    assert usage.by_model[MODEL].input_tokens == sum(rerank_tokens(QUERY, t) for t in wide)
