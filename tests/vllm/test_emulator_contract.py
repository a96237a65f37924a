"""The emulator checked against the engine: the same requests to both, the shapes compared.

The emulator (tests/support/emulator/) stays the fast default for every other test; this
says where it speaks vLLM 0.32's wire format and where not. Compared: status codes; the keys
of every reply and the JSON type of each (the emulator may leave out keys vLLM adds, never add
its own or change a type); the order of stream events (role, content, tool-call head without
`arguments`, argument pieces, finish, usage, [DONE]); which chunk carries `usage` and
`system_fingerprint`; tool-call ids; error bodies (`{"error": {...}}`, integer `code`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.emulator import VLLM_FINGERPRINT, Emulator
from tests.vllm.conftest import Engine
from tests.vllm.test_chat import MODEL, WEATHER, strict

pytestmark = pytest.mark.vllm

EMBED_MODEL = "multilingual-e5-small"


@pytest.fixture
def like_vllm(emulator: Emulator) -> Emulator:
    """The emulator configured as the vLLM servers of this tier are started."""
    emulator.served_models = {MODEL, EMBED_MODEL}
    emulator.max_context = 4096
    emulator.max_model_len = 4096
    emulator.embed_max_tokens = 512
    emulator.embed_dim = 384
    # vLLM 0.32's, which the emulator speaks when asked (its defaults: older vLLM, as TIR's
    # recorded reply).
    emulator.system_fingerprint = VLLM_FINGERPRINT
    emulator.error_format = "nested"
    return emulator


def post(base_url: str, route: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{base_url}/{route}", json=body, timeout=120)


def events(response: httpx.Response) -> list[Any]:
    found: list[Any] = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            found.append(data if data == "[DONE]" else json.loads(data))
    return found


def shape(value: Any) -> Any:
    """Keys and JSON types, recursively; a list by the shapes of its items."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        shapes: list[Any] = []
        for item in value:
            if shape(item) not in shapes:
                shapes.append(shape(item))
        return shapes
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


def mismatches(ours: Any, theirs: Any, path: str = "$") -> Iterator[str]:
    """Where the emulator's shape is not part of vLLM's: a key vLLM lacks, a type it differs in.

    A value null on one side and set on the other is no mismatch (vLLM's optional fields).
    """
    if ours == theirs or "null" in (ours, theirs):
        return
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key, value in ours.items():
            if key not in theirs:
                yield f"{path}.{key}: the emulator sends it, vLLM does not"
            else:
                yield from mismatches(value, theirs[key], f"{path}.{key}")
        return
    if isinstance(ours, list) and isinstance(theirs, list):
        for item in ours:
            if not any(not list(mismatches(item, other)) for other in theirs) and theirs:
                yield f"{path}[]: {item} is none of vLLM's {theirs}"
        return
    yield f"{path}: the emulator sends {ours}, vLLM {theirs}"


def kinds(stream: list[Any]) -> list[str]:
    """The stream as a sequence of event kinds, repeats collapsed."""
    sequence: list[str] = []
    for event in stream:
        if event == "[DONE]":
            kind = "done"
        elif not event["choices"]:
            kind = "usage"
        else:
            choice = event["choices"][0]
            delta = choice.get("delta") or {}
            calls = delta.get("tool_calls") or []
            if choice.get("finish_reason") is not None:
                kind = "finish"
            elif "role" in delta:
                kind = "role"
            elif calls and "id" in calls[0]:
                kind = "tool-head"
            elif calls:
                kind = "tool-arguments"
            else:
                kind = "content"
        if not sequence or sequence[-1] != kind or kind in ("tool-head", "finish"):
            sequence.append(kind)
    return sequence


def carriers(stream: list[Any], key: str) -> list[str]:
    """The kinds of the events that carry `key` at the top level."""
    return [k for k, e in zip(_each_kind(stream), stream, strict=True) if key in e]


def _each_kind(stream: list[Any]) -> list[str]:
    return [kinds([e])[0] for e in stream]


def compare_streams(ours: list[Any], theirs: list[Any]) -> None:
    assert kinds(ours) == kinds(theirs)
    assert carriers(ours, "usage") == carriers(theirs, "usage")
    assert carriers(ours, "system_fingerprint") == carriers(theirs, "system_fingerprint")
    for kind in set(_each_kind(theirs)) - {"done"}:
        mine = [shape(e) for e, k in zip(ours, _each_kind(ours), strict=True) if k == kind]
        real = [shape(e) for e, k in zip(theirs, _each_kind(theirs), strict=True) if k == kind]
        for one in mine:
            problems = [list(mismatches(one, r)) for r in real]
            assert min(problems, key=len) == [], f"{kind}: {min(problems, key=len)}"


def both(
    like_vllm: Emulator, engine: Engine, route: str, body: dict[str, Any]
) -> tuple[httpx.Response, httpx.Response]:
    return post(like_vllm.base_url, route, body), post(engine.base_url, route, body)


# Greedy, and cut by max_tokens: vLLM then sends the last token with finish_reason "length".
# (A reply that ends on its own ends with an empty delta and stop_reason the token id there;
# the emulator sends {"content": ""} and null, as TIR's recorded stream does.)
CHAT = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 6,
    "temperature": 0,
}


@pytest.mark.parametrize("include_usage", [True, False], ids=["usage", "no-usage"])
def test_plain_stream(like_vllm: Emulator, vllm_chat: Engine, include_usage: bool) -> None:
    body: dict[str, Any] = {**CHAT, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    ours, theirs = both(like_vllm, vllm_chat, "chat/completions", body)
    assert ours.status_code == theirs.status_code == 200
    assert ours.headers["content-type"] == theirs.headers["content-type"]
    compare_streams(events(ours), events(theirs))


def test_plain_completion(like_vllm: Emulator, vllm_chat: Engine) -> None:
    ours, theirs = both(like_vllm, vllm_chat, "chat/completions", CHAT)
    assert ours.status_code == theirs.status_code == 200
    assert list(mismatches(shape(ours.json()), shape(theirs.json()))) == []
    assert ("system_fingerprint" in ours.json()) == ("system_fingerprint" in theirs.json())


TOOL_CHOICES = {
    "required": "required",
    "named": {"type": "function", "function": {"name": "get_weather"}},
}


@pytest.mark.parametrize("choice", sorted(TOOL_CHOICES))
def test_tool_call_stream(like_vllm: Emulator, vllm_chat: Engine, choice: str) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [strict(WEATHER)],
        "tool_choice": TOOL_CHOICES[choice],
        "parallel_tool_calls": False,
        "max_tokens": 60,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    ours, theirs = both(like_vllm, vllm_chat, "chat/completions", body)
    assert ours.status_code == theirs.status_code == 200
    mine, real = events(ours), events(theirs)
    compare_streams(mine, real)
    for stream in (mine, real):
        head = next(e for e in stream if _each_kind([e]) == ["tool-head"])
        call = head["choices"][0]["delta"]["tool_calls"][0]
        # The first delta: id, type and name, no arguments key.
        assert call["id"].startswith("chatcmpl-tool-")
        assert "arguments" not in call["function"]
        finish = next(e for e in stream if _each_kind([e]) == ["finish"])
        assert finish["choices"][0]["finish_reason"] == (
            "stop" if choice == "named" else "tool_calls"
        )


def test_tool_call_completion(like_vllm: Emulator, vllm_chat: Engine) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [strict(WEATHER)],
        "tool_choice": TOOL_CHOICES["named"],
        "max_tokens": 60,
        "temperature": 0,
    }
    ours, theirs = both(like_vllm, vllm_chat, "chat/completions", body)
    assert ours.status_code == theirs.status_code == 200
    assert list(mismatches(shape(ours.json()), shape(theirs.json()))) == []
    for reply in (ours.json(), theirs.json()):
        choice = reply["choices"][0]
        assert choice["message"]["tool_calls"][0]["id"].startswith("chatcmpl-tool-")
        assert choice["finish_reason"] == "stop"


ERRORS: dict[str, tuple[str, dict[str, Any]]] = {
    "unknown-model": ("chat/completions", {**CHAT, "model": "gpt-4o"}),
    "tool-choice-names-no-tool": (
        "chat/completions",
        {
            **CHAT,
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "nope"}},
        },
    ),
    "prompt-over-the-window": (
        "chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": "hello " * 5000}]},
    ),
    "prompt-over-the-window-streamed": (
        "chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": "hello " * 5000}], "stream": True},
    ),
    "embedding-over-512": ("embeddings", {"model": EMBED_MODEL, "input": ["word " * 600]}),
    "stream-options-without-stream": (
        "chat/completions",
        {**CHAT, "stream_options": {"include_usage": True}},
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_error_bodies(
    like_vllm: Emulator, vllm_chat: Engine, vllm_embed: Engine, case: str
) -> None:
    route, body = ERRORS[case]
    engine = vllm_embed if route == "embeddings" else vllm_chat
    ours, theirs = both(like_vllm, engine, route, body)
    assert ours.status_code == theirs.status_code
    assert theirs.status_code in (400, 404)
    real = theirs.json()
    assert isinstance(real["error"]["code"], int) and real["error"]["code"] == theirs.status_code
    assert list(mismatches(shape(ours.json()), shape(real))) == []


def test_a_missing_route(like_vllm: Emulator, vllm_chat: Engine) -> None:
    ours, theirs = both(like_vllm, vllm_chat, "nope", {})
    assert ours.status_code == theirs.status_code == 404
    assert ours.json() == theirs.json() == {"detail": "Not Found"}


def test_models(like_vllm: Emulator, vllm_chat: Engine) -> None:
    ours = httpx.get(f"{like_vllm.base_url}/models", timeout=30).json()
    theirs = httpx.get(f"{vllm_chat.base_url}/models", timeout=30).json()
    assert list(mismatches(shape(ours), shape(theirs))) == []
    assert ours["data"][0]["max_model_len"] == theirs["data"][0]["max_model_len"] == 4096


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings(like_vllm: Emulator, vllm_embed: Engine, encoding: str) -> None:
    body = {"model": EMBED_MODEL, "input": ["hello", "world"], "encoding_format": encoding}
    ours, theirs = both(like_vllm, vllm_embed, "embeddings", body)
    assert ours.status_code == theirs.status_code == 200
    assert list(mismatches(shape(ours.json()), shape(theirs.json()))) == []


def test_rerank(like_vllm: Emulator, vllm_embed: Engine) -> None:
    body = {"model": EMBED_MODEL, "query": "river", "documents": ["a river", "bread"], "top_n": 1}
    ours, theirs = both(like_vllm, vllm_embed, "rerank", body)
    assert ours.status_code == theirs.status_code == 200
    assert len(ours.json()["results"]) == len(theirs.json()["results"]) == 1
    assert list(mismatches(shape(ours.json()), shape(theirs.json()))) == []
