"""`tir-llama doctor` prints the served context window and warns when the one in use differs.

vLLM reports its window as `max_model_len` in `GET /v1/models`; the emulator does not, so this
runs against a small loopback server of its own that answers as vLLM does.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator
from tir_llama.cli import main

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "llama3_1_8b_instruct",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ready"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 41, "completion_tokens": 1, "total_tokens": 42},
}


class VLLMLike(ThreadingHTTPServer):
    max_model_len: int | None = None
    seen: list[tuple[str, str, str | None]]


class Handler(BaseHTTPRequestHandler):
    server: VLLMLike

    def _send(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.seen.append(("GET", self.path, self.headers.get("authorization")))
        entry: dict[str, object] = {"id": "llama3_1_8b_instruct", "object": "model"}
        if self.server.max_model_len is not None:
            entry["max_model_len"] = self.server.max_model_len
        self._send({"object": "list", "data": [entry]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.server.seen.append(("POST", self.path, self.headers.get("authorization")))
        self._send(COMPLETION)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def vllm() -> Iterator[VLLMLike]:
    server = VLLMLike(("127.0.0.1", 0), Handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def doctor(base_url: str, *flags: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["--base-url", base_url, "doctor", *flags], out)
    return code, out.getvalue()


def base_url(server: VLLMLike) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}/v1"


def test_a_smaller_served_window_is_reported_with_the_fix(
    vllm: VLLMLike, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    vllm.max_model_len = 8192
    code, text = doctor(base_url(vllm))
    assert code == 0, text
    assert "window:      8,192 tokens served" in text
    assert "warning:     the context window in use is 131072" in text
    assert "context_window=8192" in text
    assert TEST_KEY not in text
    assert ("GET", "/v1/models", f"Bearer {TEST_KEY}") in vllm.seen


@pytest.mark.parametrize(
    ("served", "flags"),
    [(131_072, ()), (8192, ("--context-window", "8192"))],
    ids=["the model's window", "the setting matches"],
)
def test_no_warning_when_the_windows_agree(
    vllm: VLLMLike, monkeypatch: pytest.MonkeyPatch, served: int, flags: tuple[str, ...]
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    vllm.max_model_len = served
    code, text = doctor(base_url(vllm), *flags)
    assert code == 0, text
    assert f"window:      {served:,} tokens served" in text
    assert "warning" not in text


def test_a_setting_larger_than_served_is_warned(
    vllm: VLLMLike, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    vllm.max_model_len = 16_384
    code, text = doctor(base_url(vllm), "--context-window", "32768")
    assert code == 0, text
    assert "in use is 32768 (--context-window) but the endpoint serves 16,384" in text


def test_an_endpoint_that_reports_no_window(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    code, text = doctor(emulator.base_url)
    assert code == 0, text
    assert "window:      131,072 tokens (the model's" in text
    assert "does not report the one it serves" in text
    # The window check comes last: the one-token request is still the first one sent.
    assert emulator.requests[0].json["max_tokens"] == 1
