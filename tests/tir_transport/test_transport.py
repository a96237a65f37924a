"""One `Transport` shared by several per-API clients, against the emulator over real sockets."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import RERANK_MODEL, Emulator, Reply
from tir_transport import (
    ChatClient,
    EmbeddingsClient,
    Limits,
    RateLimitError,
    RerankClient,
    RetryPolicy,
    TIRConfig,
    Transport,
    build_payload,
)


def config_for(emulator: Emulator, **changes: Any) -> TIRConfig:
    settings = {"api_key": TEST_KEY, "base_url": emulator.base_url, "timeout": 5.0}
    return TIRConfig.from_env(**{**settings, "max_retries": 0, **changes})


def hello() -> dict[str, Any]:
    return build_payload([{"role": "user", "content": "Say hello"}], "llama3_1_8b_instruct")


def test_three_apis_share_one_pool(emulator: Emulator) -> None:
    config = config_for(emulator)
    with Transport(config) as transport:
        chat = ChatClient(config, transport=transport)
        embedder = EmbeddingsClient(config.replace(model="embedder"), transport=transport)
        reranker = RerankClient(config.replace(model=RERANK_MODEL), transport=transport)
        mark = emulator.connections
        assert chat.create(hello()).text
        assert len(embedder.embed(["one text"])) == 1
        assert reranker.rerank("query", ["a document"], top_n=1)
        # One keep-alive connection carried all three: the pool is the transport's.
        assert emulator.connections == mark + 1
    paths = [r.path for r in emulator.requests]
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["completions", "embeddings", "rerank"]
    assert [r.json["model"] for r in emulator.requests] == [
        "llama3_1_8b_instruct",
        "embedder",
        RERANK_MODEL,
    ]


def test_a_429_holds_back_every_client_of_the_transport(emulator: Emulator) -> None:
    # Retry-After is the server's word for the whole connection: a chat 429 delays the
    # embeddings request that follows, because both go through one transport's back-off.
    config = config_for(emulator)
    transport = Transport(config, retry=RetryPolicy(max_retries=0))
    chat = ChatClient(config, transport=transport)
    embedder = EmbeddingsClient(config.replace(model="embedder"), transport=transport)
    emulator.queue(Reply(status=429, headers={"Retry-After": "1"}))
    with pytest.raises(RateLimitError):
        chat.create(hello())
    assert transport.limits.active  # the back-off is on, for every client of the transport
    assert embedder.limits is chat.limits is transport.limits


def test_the_limits_are_the_transports(emulator: Emulator) -> None:
    config = config_for(emulator)
    limits = Limits(max_in_flight=1)
    transport = Transport(config, limits=limits)
    chat = ChatClient(config, transport=transport)
    embedder = EmbeddingsClient(config.replace(model="embedder"), transport=transport)
    assert chat.limits is embedder.limits is limits

    async def both() -> None:
        await asyncio.gather(chat.acreate(hello()), embedder.aembed(["x"]))

    emulator.chat_delay = emulator.embed_delay = 0.2
    asyncio.run(both())
    # One in flight at a time across both clients: the limit is the transport's.
    assert len(emulator.requests) == 2
    assert emulator.max_in_flight == 1


def test_settings_go_to_the_shared_transport_not_the_client(emulator: Emulator) -> None:
    config = config_for(emulator)
    transport = Transport(config)
    with pytest.raises(TypeError, match="limits to the shared transport"):
        ChatClient(config, transport=transport, limits=Limits(max_in_flight=1))
    with pytest.raises(TypeError, match="engine to the shared transport"):
        ChatClient(config, transport=transport, engine="httpx")


@pytest.mark.parametrize(
    "change",
    [{"api_key": "another-key-0123456789"}, {"timeout": 9.0}, {"project_id": "77"}],
    ids=["key", "timeout", "project"],
)
def test_a_transport_for_another_configuration_is_refused(
    emulator: Emulator, change: dict[str, Any]
) -> None:
    transport = Transport(config_for(emulator))
    with pytest.raises(ValueError, match="another configuration"):
        ChatClient(config_for(emulator, **change), transport=transport)


def test_a_pickled_client_brings_its_transport_without_pools(emulator: Emulator) -> None:
    config = config_for(emulator)
    transport = Transport(config)
    chat = ChatClient(config, transport=transport)
    assert chat.create(hello()).text
    copy = pickle.loads(pickle.dumps(chat))
    assert copy.transport is not transport
    assert copy.transport._pools._sync is None
    assert copy.create(hello()).text
    assert TEST_KEY not in repr(copy.transport)


def test_each_client_of_a_shared_transport_goes_to_its_own_models_url(
    emulator: Emulator,
) -> None:
    # TIR's GenAI URLs name the model in the path: a client sharing the chat model's
    # transport must still reach its own model's URL (found in review: it reached the chat's).
    config = TIRConfig.from_env(
        api_key=TEST_KEY, project_id="p-77", host=emulator.url, model="llama3_1_8b_instruct"
    )
    with Transport(config) as transport:
        embedder = EmbeddingsClient(config.replace(model="embedder"), transport=transport)
        reranker = RerankClient(config.replace(model=RERANK_MODEL), transport=transport)
        embedder.embed(["one text"])
        reranker.rerank("query", ["a document"], top_n=1)
    embed, rerank = emulator.requests
    assert embed.path == "/project/p-77/genai/embedder/v1/embeddings"
    assert rerank.path == f"/project/p-77/genai/{RERANK_MODEL}/v1/rerank"


def test_a_misspelt_option_is_an_error_not_ignored(emulator: Emulator) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'retries'"):
        ChatClient(config_for(emulator), retries=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'retries'"):
        ChatClient.from_env(api_key=TEST_KEY, base_url=emulator.base_url, retries=5)


def test_closing_a_client_leaves_the_shared_transport_open(emulator: Emulator) -> None:
    config = config_for(emulator)
    with Transport(config) as transport:
        chat = ChatClient(config, transport=transport)
        mark = emulator.connections
        with EmbeddingsClient(config.replace(model="embedder"), transport=transport) as embedder:
            embedder.embed(["one text"])
        assert chat.create(hello()).text
        # The embedder's `with` closed nothing of the transport: chat reused its connection.
        assert emulator.connections == mark + 1
