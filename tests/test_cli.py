"""The `tir-llama` command line against the emulator."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply
from tir_llama.cli import main


def run(
    argv: list[str], stdin: str = "", monkeypatch: pytest.MonkeyPatch | None = None
) -> tuple[int, str]:
    out = io.StringIO()
    if monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(argv, out), out.getvalue()


def test_doctor_ok(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    monkeypatch.setenv("TIR_PROJECT_ID", "p-42")
    code, text = run(["--host", emulator.url, "doctor"])
    assert code == 0, text
    assert f"url:         {emulator.url}/project/p-42/genai/llama3_1_8b_instruct/v1/" in text
    assert "set (from TIR_API_KEY; never shown)" in text
    assert "request:     ok in" in text
    assert "native tool calling is on" in text
    assert TEST_KEY not in text
    assert emulator.requests[0].json["max_tokens"] == 1


def test_doctor_without_native_tools(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    emulator.reject_tools = True
    code, text = run(["--base-url", emulator.base_url, "doctor"])
    assert code == 0, text
    assert "native tool calling is off here" in text


def test_doctor_without_a_key(emulator: Emulator) -> None:
    code, text = run(["--base-url", emulator.base_url, "doctor"])
    assert code == 2
    assert "set TIR_API_KEY" in text
    assert emulator.requests == []


def test_doctor_without_a_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    code, text = run(["doctor"])
    assert code == 2
    assert "TIR_PROJECT_ID" in text


def test_doctor_reports_a_failing_endpoint(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    emulator.require_key = "another"
    code, text = run(["--base-url", emulator.base_url, "doctor"])
    assert code == 1
    assert "failed: The TIR API token was refused" in text
    assert "The server said: Invalid API key (HTTP 401)" in text


def test_chat_streams_and_prints_usage(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    emulator.queue(Reply(text="Hi there."), Reply(text="Bye."))
    code, text = run(
        ["--base-url", emulator.base_url, "chat", "--system", "Be brief."],
        stdin="hello\nbye now\n\n",
        monkeypatch=monkeypatch,
    )
    assert code == 0, text
    assert "Hi there.\n[" in text and "Bye.\n[" in text
    assert "in, " in text and " out]" in text
    second = emulator.requests[1].json["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == "Hi there."


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "tir-llama"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "doctor" in result.stdout and "chat" in result.stdout
