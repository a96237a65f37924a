"""langchain_tir.TIRRerank: a document compressor, in a compression retriever and an LCEL chain.

Against the emulator's rerank route (word-overlap scores, so the order is known); chat and
embeddings of the same chains go to the same emulator.
"""

from __future__ import annotations

import asyncio
import json
import pickle
from typing import Any

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.exceptions import ModelAPIError
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import ValidationError

from langchain_tir import ChatTIRLlama, TIREmbeddings, TIRRerank
from tests.conftest import TEST_KEY
from tests.support.emulator import (
    Emulator,
    Reply,
    RerankReply,
    rerank_score,
    rerank_tokens,
)
from tests.support.runnables import Mode
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


def compress(reranker: TIRRerank, mode: str, docs: list[Document], query: str) -> list[Document]:
    if mode == "sync":
        return list(reranker.compress_documents(docs, query))
    return list(asyncio.run(reranker.acompress_documents(docs, query)))


def by_score(query: str, texts: list[str]) -> list[str]:
    order = sorted(range(len(texts)), key=lambda i: (-rerank_score(query, texts[i]), i))
    return [texts[i] for i in order]


def test_is_a_document_compressor() -> None:
    assert issubclass(TIRRerank, BaseDocumentCompressor)
    assert TIRRerank(model=MODEL).top_n == 3  # the documented default (docs/rag.md)


def test_compress_returns_the_best_as_new_documents(
    reranker: TIRRerank, emulator: Emulator, mode: str
) -> None:
    docs = [
        Document(page_content=t, metadata={"n": i, "tags": ["geo"]}, id=f"d{i}")
        for i, t in enumerate(PASSAGES)
    ]
    before = [d.model_dump() for d in docs]
    best = compress(reranker, mode, docs, QUERY)
    assert [d.page_content for d in best] == by_score(QUERY, PASSAGES)[:3]
    assert [d.id for d in best] == ["d2", "d3", "d0"]  # the ids come along
    assert [d.metadata["relevance_score"] for d in best] == [
        rerank_score(QUERY, d.page_content) for d in best
    ]
    assert best[0].metadata["n"] == 2 and best[0].metadata["tags"] == ["geo"]
    best[0].metadata["tags"].append("changed")  # a deep copy: the caller's list is its own
    assert [d.model_dump() for d in docs] == before  # nothing given was changed
    assert all(b is not d for b in best for d in docs)
    (request,) = emulator.requests
    assert request.json == {"model": MODEL, "query": QUERY, "documents": PASSAGES, "top_n": 3}


def test_rerank_gives_every_index_and_score(reranker: TIRRerank, mode: str) -> None:
    # Strings and documents alike; every one back, best first.
    given: list[Any] = [PASSAGES[0], Document(page_content=PASSAGES[2]), *PASSAGES[3:]]
    if mode == "sync":
        pairs = reranker.rerank(QUERY, given)
    else:
        pairs = asyncio.run(reranker.arerank(QUERY, given))
    texts = [PASSAGES[0], PASSAGES[2], PASSAGES[3], PASSAGES[4]]
    # rerank(query, documents), the first signature, still ranks every document.
    assert pairs == [
        {"index": i, "relevance_score": rerank_score(QUERY, texts[i])}
        for i in sorted(range(4), key=lambda i: (-rerank_score(QUERY, texts[i]), i))
    ]


def test_many_documents_go_in_batches_merged_by_score(emulator: Emulator, mode: str) -> None:
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
    best = compress(reranker, mode, [Document(page_content=t) for t in texts], QUERY)
    assert [d.page_content for d in best] == by_score(QUERY, texts)[:4]
    sizes = sorted(len(r.json["documents"]) for r in emulator.requests)
    assert sizes == [2, 16, 16, 16]
    assert emulator.max_in_flight <= 2


def test_top_n_none_keeps_all_reordered(emulator: Emulator, mode: str) -> None:
    reranker = TIRRerank(api_key=TEST_KEY, base_url=emulator.base_url, model=MODEL, top_n=None)
    best = compress(reranker, mode, [Document(page_content=t) for t in PASSAGES], QUERY)
    assert [d.page_content for d in best] == by_score(QUERY, PASSAGES)
    assert "top_n" not in emulator.requests[0].json


def test_no_documents_no_request(reranker: TIRRerank, emulator: Emulator, mode: str) -> None:
    assert compress(reranker, mode, [], QUERY) == []
    assert emulator.requests == []


def test_errors_are_langchain_errors_and_name_the_document(
    reranker: TIRRerank, emulator: Emulator, mode: str
) -> None:
    docs = [Document(page_content=t) for t in PASSAGES]
    with pytest.raises(InputError, match="query is empty"):
        compress(reranker, mode, docs, "  ")
    assert emulator.requests == []
    emulator.queue_rerank(RerankReply(duplicate_index=True))
    with pytest.raises(InvalidResponseError, match="two results") as caught:
        compress(reranker, mode, [Document(page_content=t) for t in PASSAGES], QUERY)
    assert isinstance(caught.value, ModelAPIError)  # LangChain's class too


def test_a_missing_model_names_the_variable(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    reranker = TIRRerank(api_key=TEST_KEY, base_url=emulator.base_url)
    with pytest.raises(ConfigurationError, match="TIR_RERANK_MODEL"):
        reranker.compress_documents([Document(page_content="x")], "q")
    monkeypatch.setenv("TIR_RERANK_MODEL", "env_reranker")
    assert TIRRerank().model == "env_reranker"
    assert TIRRerank(model="given").model == "given"


def test_bad_settings_are_refused() -> None:
    for bad in ({"top_n": -1}, {"batch_size": 0}, {"max_concurrency": 0}):
        with pytest.raises(ValidationError):
            TIRRerank(model=MODEL, **bad)


def test_key_hidden_and_picklable(reranker: TIRRerank) -> None:
    for text in (
        repr(reranker),
        str(reranker),
        str(reranker.model_dump()),
        reranker.model_dump_json(),
    ):
        assert TEST_KEY not in text
    copy = pickle.loads(pickle.dumps(reranker))
    assert copy.api_key is not None and copy.api_key.get_secret_value() == TEST_KEY
    assert copy.rerank(PASSAGES, QUERY)[0]["index"] == 2


def test_changed_settings_take_effect(reranker: TIRRerank, emulator: Emulator) -> None:
    reranker.rerank(QUERY, PASSAGES)
    reranker.model_copy(update={"model": "other"}).rerank(QUERY, PASSAGES)
    assert [r.json["model"] for r in emulator.requests] == [MODEL, "other"]


# -- in LangChain's retrievers and chains -------------------------------------------------------

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


def store(emulator: Emulator) -> InMemoryVectorStore:
    embeddings = TIREmbeddings(api_key=TEST_KEY, base_url=emulator.base_url, model="e5")
    return InMemoryVectorStore.from_texts(CORPUS, embeddings)


def test_in_a_contextual_compression_retriever(emulator: Emulator, mode: str) -> None:
    retriever = ContextualCompressionRetriever(
        base_compressor=TIRRerank(api_key=TEST_KEY, base_url=emulator.base_url, model=MODEL),
        base_retriever=store(emulator).as_retriever(search_kwargs={"k": 12}),
    )
    with track_usage() as usage:
        docs = Mode(mode).invoke(retriever, QUERY)
    (request,) = emulator.rerank_requests()
    wide = request.json["documents"]
    assert len(wide) == 12  # retrieved wide ...
    assert [d.page_content for d in docs] == by_score(QUERY, wide)[:3]  # ... kept the best
    assert docs[0].page_content == "The Ganga flows east into the Bay of Bengal."
    assert all("relevance_score" in d.metadata for d in docs)
    rerank_usage = usage.by_model[MODEL]
    assert rerank_usage.input_tokens == sum(rerank_tokens(QUERY, d) for d in wide)
    assert set(usage.by_model) == {"e5", MODEL}


def test_in_an_lcel_retrieval_chain(emulator: Emulator, mode: str) -> None:
    reranker = TIRRerank(api_key=TEST_KEY, base_url=emulator.base_url, model=MODEL, top_n=2)
    retriever = store(emulator).as_retriever(search_kwargs={"k": 12})

    def rerank(question: str) -> list[Document]:
        return list(reranker.compress_documents(retriever.invoke(question), question))

    async def arerank(question: str) -> list[Document]:
        return list(await reranker.acompress_documents(await retriever.ainvoke(question), question))

    prompt = ChatPromptTemplate.from_template(
        "Answer from this context:\n{context}\n\nQuestion: {question}"
    )
    chain = (
        {
            "context": RunnableLambda(rerank, afunc=arerank)
            | (lambda docs: "\n".join(d.page_content for d in docs)),
            "question": RunnablePassthrough(),
        }
        | prompt
        | ChatTIRLlama(api_key=TEST_KEY, base_url=emulator.base_url)
        | StrOutputParser()
    )
    emulator.queue(Reply(text="The Ganga."))
    answer = Mode(mode).invoke(chain, QUERY)
    assert answer == "The Ganga."
    (chat,) = [r for r in emulator.requests if r.path.endswith("/chat/completions")]
    sent = json.dumps(chat.json["messages"])
    (rerank_request,) = emulator.rerank_requests()
    kept = by_score(QUERY, rerank_request.json["documents"])
    assert kept[0] in sent and kept[1] in sent  # the two best reached the model ...
    assert all(other not in sent for other in kept[2:])  # ... and nothing else
