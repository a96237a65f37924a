"""The rerank samples of `docs/rag.md` run against the emulator's rerank route.

They are fenced ```` ```py ```` rather than ```` ```python ````, so `test_docs.py` (whose
emulator has no rerank route yet) leaves them to this file; once the route joins `emulator.py`
they become ```` ```python ```` samples there and this file goes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_index.core import Settings

from tests.conftest import TEST_KEY
from tests.support.rerank_emulator import RerankEmulator, shared_rerank_emulator

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "rag.md"
SAMPLE = re.compile(r"^```py\n(.*?)^```", re.MULTILINE | re.DOTALL)
SAMPLES = [
    (f"rag.md rerank #{n}", m.group(1)) for n, m in enumerate(SAMPLE.finditer(PAGE.read_text()), 1)
]
RERANKER = "test-rerank-model"


@pytest.fixture
def emulator() -> Iterator[RerankEmulator]:
    yield from shared_rerank_emulator()


def test_there_are_rerank_samples_and_each_asserts() -> None:
    assert len(SAMPLES) == 3
    assert all(re.search(r"^\s*assert ", code, re.M) for _, code in SAMPLES)


@pytest.mark.parametrize(("where", "code"), SAMPLES, ids=[w for w, _ in SAMPLES])
def test_rerank_sample_runs(
    where: str,
    code: str,
    emulator: RerankEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    # The environment a reader sets, aimed at the emulator instead of TIR.
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    monkeypatch.setenv("TIR_PROJECT_ID", "1234")
    monkeypatch.setenv("TIR_BASE_URL", emulator.base_url)
    monkeypatch.setenv("TIR_EMBEDDING_MODEL", "test-embedding-model")
    monkeypatch.setenv("TIR_RERANK_MODEL", RERANKER)
    try:
        exec(compile(code, where, "exec"), {"__name__": "sample"})  # its asserts check it
    finally:
        # LlamaIndex's Settings are global: the next test starts without the sample's models.
        Settings.llm = None  # type: ignore[assignment]
        Settings.embed_model = None  # type: ignore[assignment]
    # Every sample reranked on the wire, with the model the reader set.
    reranks = emulator.rerank_requests()
    assert reranks and all(r.json["model"] == RERANKER for r in reranks)
