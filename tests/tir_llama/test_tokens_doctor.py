"""`tir-llama doctor` prints the served context window and warns when the one in use differs.

vLLM reports its window as `max_model_len` in `GET /v1/models`; so does the emulator
(`emulator.max_model_len`, Llama 3.1 8B's 131,072 unless a test sets another, or None for an
endpoint that reports none).
"""

from __future__ import annotations

import io

import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator
from tir_llama.cli import main


def doctor(emulator: Emulator, *flags: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["--base-url", emulator.base_url, "doctor", *flags], out)
    return code, out.getvalue()


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)


def test_a_smaller_served_window_is_reported_with_the_fix(emulator: Emulator) -> None:
    emulator.max_model_len = 8192
    code, text = doctor(emulator)
    assert code == 0, text
    assert "window:      8,192 tokens served" in text
    assert "warning:     the context window in use is 131072" in text
    assert "context_window=8192" in text
    assert TEST_KEY not in text
    (models,) = [r for r in emulator.requests if r.path == "/v1/models"]
    assert models.method == "GET" and models.headers["authorization"] == f"Bearer {TEST_KEY}"


@pytest.mark.parametrize(
    ("served", "flags"),
    [(None, ()), (8192, ("--context-window", "8192"))],
    ids=["the model's window (the emulator's default)", "the setting matches"],
)
def test_no_warning_when_the_windows_agree(
    emulator: Emulator, served: int | None, flags: tuple[str, ...]
) -> None:
    if served is not None:
        emulator.max_model_len = served
    code, text = doctor(emulator, *flags)
    assert code == 0, text
    assert f"window:      {served or 131_072:,} tokens served" in text
    assert "warning" not in text


def test_a_setting_larger_than_served_is_warned(emulator: Emulator) -> None:
    emulator.max_model_len = 16_384
    code, text = doctor(emulator, "--context-window", "32768")
    assert code == 0, text
    assert "in use is 32768 (--context-window) but the endpoint serves 16,384" in text


def test_an_endpoint_that_reports_no_window(emulator: Emulator) -> None:
    emulator.max_model_len = None
    code, text = doctor(emulator)
    assert code == 0, text
    assert "window:      131,072 tokens (the model's" in text
    assert "does not report the one it serves" in text
    # The window check comes last: the one-token request is still the first one sent.
    assert emulator.requests[0].json["max_tokens"] == 1
