"""LangChain and LlamaIndex inside Ray Data with map_batches; one small job on a real model."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import ray.data

import ray_tir
from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator

pytestmark = pytest.mark.usefixtures("ray_local")


class LangChainSummary:
    """The docs' pattern: a chain built once per actor, a batch answered with `abatch`."""

    def __init__(self, base_url: str) -> None:
        from langchain_core.output_parsers import StrOutputParser
        from langchain_core.prompts import ChatPromptTemplate

        from langchain_tir import ChatTIRLlama

        prompt = ChatPromptTemplate.from_template("Summarise in five words: {text}")
        llm = ChatTIRLlama(api_key=TEST_KEY, base_url=base_url, max_tokens=3, max_in_flight=4)
        self.chain = prompt | llm | StrOutputParser()

    async def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts = list(batch["text"])
        batch["summary"] = await self.chain.abatch([{"text": t} for t in texts])
        return batch


class LlamaIndexSummary:
    def __init__(self, base_url: str) -> None:
        from llama_index_tir import TIRLlamaLLM

        self.llm = TIRLlamaLLM(api_key=TEST_KEY, base_url=base_url, max_tokens=3)

    async def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        replies = await asyncio.gather(
            *(self.llm.acomplete(f"Summarise: {t}") for t in batch["text"])
        )
        batch["summary"] = [r.text for r in replies]
        return batch


@pytest.mark.parametrize("worker", [LangChainSummary, LlamaIndexSummary])
def test_a_framework_over_a_dataset(emulator: Emulator, worker: type) -> None:
    ds = ray.data.from_items([{"text": f"contract {i}"} for i in range(30)], override_num_blocks=3)
    out = ds.map_batches(
        worker,
        fn_constructor_kwargs={"base_url": emulator.base_url},
        batch_size=10,
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=0.5,
    ).take_all()
    assert sorted(r["text"] for r in out) == sorted(f"contract {i}" for i in range(30))
    assert all(r["summary"] == "Hello. How" for r in out)  # 3 tokens
    prompts = [r.json["messages"][0]["content"] for r in emulator.requests]
    assert len(prompts) == 30 and all("contract" in p for p in prompts)


@pytest.mark.realmodel
def test_a_small_job_on_the_real_model(local_model: str) -> None:
    ds = ray.data.from_items(
        [{"id": i, "prompt": f"What is {i} plus {i}?"} for i in range(6)], override_num_blocks=2
    )
    rows = ray_tir.chat(
        ds, api_key="local", base_url=local_model, max_tokens=8, temperature=0, max_in_flight=2
    ).take_all()
    assert sorted(r["id"] for r in rows) == list(range(6))
    assert all(r["error"] is None and r["response"] for r in rows), rows
    # llama.cpp reports usage on non-streamed replies.
    totals = ray_tir.usage(rows)
    assert totals["rows_without_usage"] == 0
    assert 0 < totals["usage"].output_tokens <= 6 * 8
