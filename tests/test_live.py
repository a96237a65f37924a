"""Against the real TIR service: run only with TIR_API_KEY and TIR_PROJECT_ID set."""

from __future__ import annotations

import asyncio
import io

import pytest
from langchain_core.documents import Document
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from langchain_tir import ChatTIRLlama, TIRRerank
from llama_index_tir import TIRLlamaLLM
from tests.conftest import LIVE_ENV
from tir_llama.cli import main
from tir_transport import track_usage

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("live_env")]


def test_langchain_invoke_and_stream_with_usage() -> None:
    llm = ChatTIRLlama(max_tokens=16, temperature=0)
    with track_usage() as usage:
        message = llm.invoke("Say hello in one word.")
        full = None
        for chunk in llm.stream("Count to three."):
            full = chunk if full is None else full + chunk
    assert message.text and message.usage_metadata
    assert full is not None and full.text and full.usage_metadata
    assert usage.requests == 2 and usage.total_tokens > 0


def test_llama_index_astream_chat() -> None:
    llm = TIRLlamaLLM(max_tokens=16, temperature=0)

    async def run() -> str:
        messages = [ChatMessage(role=MessageRole.USER, content="Say hello.")]
        return "".join([r.delta or "" async for r in await llm.astream_chat(messages)])

    assert asyncio.run(run())


def test_doctor() -> None:
    out = io.StringIO()
    assert main(["doctor"], out) == 0, out.getvalue()
    assert "request:     ok" in out.getvalue()


@pytest.mark.skipif(
    not LIVE_ENV.get("TIR_RERANK_MODEL"),
    reason="needs a rerank model on TIR: set TIR_RERANK_MODEL to its API name",
)
def test_rerank_puts_the_answer_first() -> None:
    documents = [
        Document(page_content="Bananas are yellow and grow in bunches."),
        Document(page_content="TIR is E2E Networks' AI platform, with GenAI model endpoints."),
        Document(page_content="The Ganges flows into the Bay of Bengal."),
    ]
    with track_usage() as usage:
        kept = TIRRerank(top_n=1).compress_documents(documents, "What is TIR?")
    assert [d.page_content for d in kept] == [documents[1].page_content]
    assert isinstance(kept[0].metadata["relevance_score"], float) and usage.requests == 1
