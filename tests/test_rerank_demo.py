"""`make demo` on TIR with a rerank model: retrieve wide, rerank, answer from the best few.

TIR itself is not reachable from tests: the demo's on-TIR path runs against the emulator
(chat, embeddings and rerank on one loopback server), set through the same variables a user
sets. The offline path (no reranker, and saying so) is `test_demo.py`'s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY
from tests.support.rerank_emulator import RerankEmulator, shared_rerank_emulator

ROOT = Path(__file__).resolve().parent.parent
RERANKER = "bge_reranker_v2_m3"


@pytest.fixture
def emulator() -> Iterator[RerankEmulator]:
    yield from shared_rerank_emulator()


@pytest.mark.timeout(300)
def test_demo_reranks_on_tir(emulator: RerankEmulator) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIR_", "E2E_TIR_"))}
    env.update(
        TIR_API_KEY=TEST_KEY,
        TIR_PROJECT_ID="1234",
        TIR_BASE_URL=emulator.base_url,
        TIR_EMBEDDING_MODEL="e5",
        TIR_RERANK_MODEL=RERANKER,
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert f"Reranking on TIR: {RERANKER} (retrieve 12 chunks, answer from the best 3)" in out
    assert "reranking is skipped" not in out
    assert "(12 chunks reranked to 3)" in out
    # Both retrieval sections sent 12 chunks to the reranker and answered from 3 of them.
    reranks = emulator.rerank_requests()
    assert len(reranks) == 2
    assert all(len(r.json["documents"]) == 12 and r.json["top_n"] == 3 for r in reranks)
    assert out.count("source:      ") == 3 and "(relevance " in out
    assert out.count("retrieved:   ") == 3
    table = out.split("Usage, from")[1]
    assert RERANKER in table  # rerank tokens in the usage table
