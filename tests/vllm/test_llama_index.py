"""TIRLlamaLLM, TIREmbedding and TIRRerank against a real vLLM: chat, agents, RAG with rerank."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from llama_index_tir import TIREmbedding, TIRLlamaLLM, TIRRerank
from tests.vllm.conftest import Engine
from tir_transport import track_usage

pytestmark = pytest.mark.vllm

KEY = "vllm-local"


@pytest.fixture
def llm(vllm_chat: Engine) -> TIRLlamaLLM:
    return TIRLlamaLLM(
        api_key=KEY,
        base_url=vllm_chat.base_url,
        max_tokens=24,
        temperature=0,
        timeout=120,
        context_window=4096,
    )


def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"Sunny in {city}"


class City(BaseModel):
    """A city and its country."""

    name: str
    country: str


def test_chat(llm: TIRLlamaLLM) -> None:
    response = llm.chat([ChatMessage(role=MessageRole.USER, content="Capital of France?")])
    assert "Paris" in (response.message.content or "")
    assert 0 < response.additional_kwargs["completion_tokens"] <= 24


def test_stream_chat_usage_once(llm: TIRLlamaLLM) -> None:
    with track_usage() as usage:
        responses = list(
            llm.stream_chat([ChatMessage(role=MessageRole.USER, content="Count to 5.")])
        )
    text = "".join(r.delta or "" for r in responses)
    assert text and responses[-1].message.content == text
    with_usage = [r for r in responses if "total_tokens" in r.additional_kwargs]
    assert len(with_usage) == 1
    assert with_usage[0].additional_kwargs["total_tokens"] == usage.total_tokens > 0


@pytest.mark.parametrize("streaming", [False, True], ids=["chat", "stream"])
def test_function_agent_end_to_end(llm: TIRLlamaLLM, streaming: bool) -> None:
    called: list[str] = []

    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        called.append(city)
        return f"Sunny and 24 degrees in {city}"

    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(fn=get_weather)],
        llm=llm.model_copy(update={"max_tokens": 40}),
        streaming=streaming,
        initial_tool_choice="get_weather",
    )

    async def run() -> str:
        return str(await agent.run("What is the weather in Paris?"))

    with track_usage() as usage:
        answer = asyncio.run(run())
    # The forced first call reached the tool with a city; the second turn answered in words.
    assert len(called) == 1 and called[0]
    assert answer.strip()
    assert usage.requests == 2


def test_structured_predict(llm: TIRLlamaLLM) -> None:
    city = llm.model_copy(update={"max_tokens": 60}).structured_predict(
        City, PromptTemplate("Name a city in {country}."), country="India"
    )
    assert isinstance(city, City)
    assert city.name and city.country


CORPUS = [
    "The Ganges is a river in India. It flows into the Bay of Bengal.",
    "Bread is baked from flour, water and yeast.",
    "The Eiffel Tower stands in Paris, France.",
    "Football is played by two teams of eleven players.",
    "The Thames flows through London.",
]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_rag_query_engine_with_rerank(
    vllm_chat: Engine, vllm_embed: Engine, llm: TIRLlamaLLM, mode: str
) -> None:
    embed = TIREmbedding(api_key=KEY, base_url=vllm_embed.base_url, model=vllm_embed.model)
    rerank = TIRRerank(api_key=KEY, base_url=vllm_embed.base_url, model=vllm_embed.model, top_n=2)
    index = VectorStoreIndex.from_documents([Document(text=t) for t in CORPUS], embed_model=embed)
    engine = index.as_query_engine(
        llm=llm.model_copy(update={"max_tokens": 30}),
        similarity_top_k=4,
        node_postprocessors=[rerank],
    )
    question = "Into which bay does the Ganges river flow?"
    with track_usage() as usage:
        response = (
            engine.query(question) if mode == "sync" else asyncio.run(engine.aquery(question))
        )
    assert str(response).strip()
    kept = [n.node.get_content() for n in response.source_nodes]
    assert len(kept) == 2
    assert kept[0] == CORPUS[0]
    # Scores are vLLM's (cosine, between 0 and 1), best first.
    scores = [n.score or 0.0 for n in response.source_nodes]
    assert scores == sorted(scores, reverse=True)
    # Embeddings (the corpus and the question), rerank and chat: all counted.
    assert usage.requests >= 3
    assert set(usage.requests_by_model) >= {vllm_embed.model, vllm_chat.model}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_forced_call_cut_by_max_tokens_says_so(llm: TIRLlamaLLM, mode: str) -> None:
    # vLLM sends a forced call that max_tokens cut as text; the core reads it as a cut call,
    # and LlamaIndex's tool path gets an error naming max_tokens instead of calling the tool
    # with whatever part of the arguments fitted.
    short = llm.model_copy(update={"max_tokens": 6})
    tool = FunctionTool.from_defaults(fn=get_weather)
    with pytest.raises(ValueError, match=r"max_tokens cut the call to get_weather.*it is 6"):
        if mode == "sync":
            short.predict_and_call([tool], "What is the weather in Paris?", tool_required=True)
        else:
            asyncio.run(
                short.apredict_and_call([tool], "What is the weather in Paris?", tool_required=True)
            )
