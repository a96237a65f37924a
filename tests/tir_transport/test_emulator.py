"""The emulator itself must speak the recorded wire format exactly."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.conftest import FIXTURES
from tests.support.emulator import TOOLS_REJECTED, Emulator, Reply

BODY = {"model": "llama3_1_8b_instruct", "messages": [{"role": "user", "content": "Hi"}]}


def test_reproduces_the_recorded_stream_byte_for_byte(emulator: Emulator) -> None:
    with httpx.stream(
        "POST", f"{emulator.base_url}/chat/completions", json={**BODY, "stream": True}
    ) as r:
        body = r.read()
    assert r.headers["content-type"].startswith("text/event-stream")
    assert body == (FIXTURES / "seed_stream.txt").read_bytes()


def test_usage_chunk_when_asked(emulator: Emulator) -> None:
    payload = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    body = httpx.post(f"{emulator.base_url}/chat/completions", json=payload).text
    events = [line[6:] for line in body.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 5, "total_tokens": 14, "completion_tokens": 9}


def test_full_reply_shape(emulator: Emulator) -> None:
    data = httpx.post(f"{emulator.base_url}/chat/completions", json=BODY).json()
    assert set(data) >= {"id", "object", "created", "model", "choices", "usage"}
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == "Hello. How can I assist you today?"


def test_records_requests(emulator: Emulator) -> None:
    httpx.post(f"{emulator.url}/project/p-1/genai/m/v1/chat/completions?project_id=1", json=BODY)
    (request,) = emulator.requests
    assert request.path == "/project/p-1/genai/m/v1/chat/completions"
    assert request.query == {"project_id": ["1"]}
    assert request.json == BODY


def test_tool_rejection_knob(emulator: Emulator) -> None:
    emulator.reject_tools = True
    reply = httpx.post(
        f"{emulator.base_url}/chat/completions", json={**BODY, "tools": [{"type": "function"}]}
    )
    assert reply.status_code == 400
    assert reply.json()["message"] == TOOLS_REJECTED


def test_tool_call_deltas(emulator: Emulator) -> None:
    emulator.queue(Reply(tool_calls=[{"name": "f", "arguments": '{"city": "Paris"}'}]))
    body = httpx.post(f"{emulator.base_url}/chat/completions", json={**BODY, "stream": True}).text
    chunks = [json.loads(line[6:]) for line in body.split("\n") if line.startswith("data: {")]
    calls = [c["choices"][0]["delta"].get("tool_calls") for c in chunks]
    fragments = [call[0]["function"].get("arguments", "") for call in calls if call]
    assert "".join(fragments) == '{"city": "Paris"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


# -- what tests wait on instead of sleeping ---------------------------------------------------


def test_held_replies_wait_for_their_company(emulator: Emulator) -> None:
    emulator.queue(*[Reply(hold_until_in_flight=3)] * 3)
    url = f"{emulator.base_url}/chat/completions"
    done: list[int] = []

    def post() -> None:
        done.append(httpx.post(url, json=BODY, timeout=30).status_code)

    threads = [threading.Thread(target=post) for _ in range(3)]
    for thread in threads[:2]:
        thread.start()
    emulator.wait_until(lambda: emulator.in_flight == 2, "two requests in flight")
    assert done == []  # held: a third has not come
    threads[2].start()
    for thread in threads:
        thread.join()
    assert done == [200] * 3
    assert emulator.max_in_flight == 3
    assert emulator.statuses() == [200] * 3


def test_wait_until_fails_with_what_it_waited_for(emulator: Emulator) -> None:
    with pytest.raises(AssertionError, match=r"never saw a request within 0\.05 s"):
        emulator.wait_until(lambda: bool(emulator.requests), "a request", timeout=0.05)


def test_statuses_record_faults_in_order(emulator: Emulator) -> None:
    emulator.fault_every = 1
    url = f"{emulator.base_url}/chat/completions"
    assert httpx.post(url, json=BODY).status_code == 429
    assert httpx.post(url, json=BODY).status_code == 503
    with pytest.raises(httpx.TransportError):
        httpx.post(url, json=BODY)
    assert emulator.statuses() == [429, 503, 0]


def test_answer_from_tool_results(emulator: Emulator) -> None:
    emulator.answer_from_tool_results = True
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "tool", "tool_call_id": "c1", "content": "It is sunny in Pune."},
    ]
    data = httpx.post(f"{emulator.base_url}/chat/completions", json={**BODY, "messages": messages})
    assert data.json()["choices"][0]["message"]["content"] == "The tool says: It is sunny in Pune."
    # Without a tool result last, the recorded reply as always.
    plain = httpx.post(f"{emulator.base_url}/chat/completions", json=BODY).json()
    assert plain["choices"][0]["message"]["content"] == "Hello. How can I assist you today?"
