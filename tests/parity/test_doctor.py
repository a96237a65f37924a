"""`tir-llama doctor` checks every model that is set.

No peer has a doctor; what the peers show is the fact it must report: a request naming a model
the server does not serve fails (`OpenAIEmbeddings` raises `NotFoundError`), so a doctor that
says "ok" for such a model is wrong.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from langchain_openai import OpenAIEmbeddings

from tests.conftest import TEST_KEY
from tests.support.emulator import DEFAULT_MODEL, RERANK_MODEL, Emulator
from tir_llama.cli import main

EMBEDDING_MODEL = "e5_mistral_7b"


def doctor(emulator: Emulator) -> tuple[int, str]:
    out = io.StringIO()
    return main(["--base-url", emulator.base_url, "doctor"], out), out.getvalue()


@pytest.fixture
def configured(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    monkeypatch.setenv("TIR_EMBEDDING_MODEL", EMBEDDING_MODEL)
    monkeypatch.setenv("TIR_RERANK_MODEL", RERANK_MODEL)
    return emulator


def test_every_model_set_is_checked_and_reported(configured: Emulator) -> None:
    code, text = doctor(configured)
    assert code == 0, text
    assert f"embeddings:  {EMBEDDING_MODEL} (TIR_EMBEDDING_MODEL): ok, 32 dimensions" in text
    assert f"rerank:      {RERANK_MODEL} (TIR_RERANK_MODEL): ok" in text
    paths = [r.path for r in configured.requests if r.method == "POST"]
    assert paths.count("/v1/embeddings") == 1 and paths.count("/v1/rerank") == 1
    assert TEST_KEY not in text


@pytest.mark.parametrize("missing", ["embeddings", "rerank", "both"])
def test_a_model_that_does_not_exist_fails_the_doctor(configured: Emulator, missing: str) -> None:
    served = {DEFAULT_MODEL}
    if missing == "rerank":
        served.add(EMBEDDING_MODEL)
    if missing == "embeddings":
        served.add(RERANK_MODEL)
    configured.served_models = served
    # What the peer shows for such a model.
    options: dict[str, Any] = {
        "model": EMBEDDING_MODEL,
        "base_url": configured.base_url,
        "api_key": TEST_KEY,
        "check_embedding_ctx_length": False,
        "max_retries": 0,
    }
    peer = OpenAIEmbeddings(**options)
    if missing != "rerank":
        with pytest.raises(Exception, match="does not exist") as caught:
            peer.embed_query("ready")
        assert type(caught.value).__name__ == "NotFoundError"
    code, text = doctor(configured)
    assert code == 1, text
    assert "request:     ok" in text  # chat is fine; each other model reported on its own
    for kind, model in (("embeddings", EMBEDDING_MODEL), ("rerank", RERANK_MODEL)):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{kind}:"))
        assert model in line
        if missing in (kind, "both"):
            assert "failed" in line and "does not exist" in line, line
        else:
            assert line.endswith("ok") or ": ok," in line, line


def test_models_not_set_are_not_checked(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    code, text = doctor(emulator)
    assert code == 0, text
    assert "embeddings:" not in text and "rerank:" not in text
    assert all(r.path.endswith(("/chat/completions", "/models")) for r in emulator.requests)
