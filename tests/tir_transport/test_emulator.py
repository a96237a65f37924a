"""The emulator itself must speak the recorded wire format exactly."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.conftest import FIXTURES
from tests.support.emulator import (
    TOOLS_REJECTED,
    Emulator,
    Reply,
    RerankReply,
    rerank_score,
    rerank_tokens,
)

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


@pytest.mark.parametrize(
    ("limits", "words"),
    [({"max_completion_tokens": 2, "max_tokens": 5}, 2), ({"max_tokens": 3}, 3)],
    ids=["both: max_completion_tokens", "max_tokens alone"],
)
def test_the_limit_is_taken_as_vllm_takes_it(
    emulator: Emulator, limits: dict[str, int], words: int
) -> None:
    # vLLM: `max_completion_tokens or max_tokens`.
    data = httpx.post(f"{emulator.base_url}/chat/completions", json={**BODY, **limits}).json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == words


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


# -- the other routes: /models, /rerank ------------------------------------------------------


def test_models_report_the_window_as_vllm_does(emulator: Emulator) -> None:
    url = f"{emulator.base_url}/models"
    (model,) = httpx.get(url).json()["data"]
    assert model == {"id": "llama3_1_8b_instruct", "object": "model", "max_model_len": 131_072}
    emulator.max_model_len = 8192
    assert httpx.get(url).json()["data"][0]["max_model_len"] == 8192
    emulator.max_model_len = None  # an endpoint that reports no window
    assert "max_model_len" not in httpx.get(url).json()["data"][0]
    emulator.reset()
    assert httpx.get(url).json()["data"][0]["max_model_len"] == 131_072


QUERY = "which river flows east"
DOCS = ["Paris is in France.", "The Ganga flows east.", "A river flows.", "The river flows east."]


def test_rerank_reply_shape(emulator: Emulator) -> None:
    body = {"model": "r", "query": QUERY, "documents": DOCS, "top_n": 3}
    data = httpx.post(f"{emulator.base_url}/rerank", json=body).json()
    assert set(data) == {"id", "model", "usage", "results"} and data["model"] == "r"
    # Best first, cut to top_n; a tie (documents 1 and 2: two words of four) in input order.
    assert [r["index"] for r in data["results"]] == [3, 1, 2]
    assert [r["relevance_score"] for r in data["results"]] == [0.75, 0.5, 0.5]
    assert [r["relevance_score"] for r in data["results"]] == [
        rerank_score(QUERY, DOCS[i]) for i in (3, 1, 2)
    ]
    assert [r["document"]["text"] for r in data["results"]] == [DOCS[3], DOCS[1], DOCS[2]]
    assert data["usage"] == {"total_tokens": sum(rerank_tokens(QUERY, d) for d in DOCS)}
    (request,) = emulator.rerank_requests()
    assert request.json == body


def test_rerank_knobs_and_reset(emulator: Emulator) -> None:
    url = f"{emulator.base_url}/rerank"
    body = {"model": "r", "query": QUERY, "documents": DOCS}
    emulator.queue_rerank(RerankReply(duplicate_index=True), Reply(status=503))
    emulator.rerank_max_tokens = 5
    emulator.queue(Reply(text="chat"))  # another route's queue: not rerank's
    assert httpx.post(url, json=body).status_code == 400  # too long before any queued reply
    emulator.rerank_max_tokens = None
    results = httpx.post(url, json=body).json()["results"]
    assert results[0]["index"] == results[1]["index"]
    assert httpx.post(url, json=body).status_code == 503
    chat = httpx.post(f"{emulator.base_url}/chat/completions", json=BODY).json()
    assert chat["choices"][0]["message"]["content"] == "chat"
    emulator.queue_rerank(Reply(status=503))
    emulator.rerank_max_tokens = 5
    emulator.rerank_delay = 30.0
    emulator.reset()  # every rerank knob back: no queued reply, no window, no delay
    data = httpx.post(url, json=body, timeout=10).json()
    assert [r["index"] for r in data["results"]] == [3, 1, 2, 0]
    assert len(emulator.rerank_requests()) == 1 and emulator.statuses() == [200]


def test_open_since_counts_only_later_connections(emulator: Emulator) -> None:
    with httpx.Client() as earlier:
        earlier.get(f"{emulator.base_url}/models")  # kept open in the pool
        mark = emulator.connections
        with httpx.Client() as later:
            later.get(f"{emulator.base_url}/models")
            assert emulator.open_since(mark) == 1
        emulator.wait_until(lambda: emulator.open_since(mark) == 0, "the later one closed")
        assert emulator.open_since(mark - 1) == 1  # the earlier one is still open


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
