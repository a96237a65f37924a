"""Run one scenario with the peer and with ours against the same emulator, and compare.

A scenario is an action on a model object; `side_by_side` runs it twice, each time on a fresh
emulator (the same knobs, the same scripted replies) and with no endpoint memory, and
returns what each side gave: the value or the error, and the request bodies it sent.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_openai import ChatOpenAI
from llama_index.llms.openai_like import OpenAILike  # type: ignore[import-untyped]

from langchain_tir import ChatTIRLlama
from llama_index_tir import TIRLlamaLLM
from tests.conftest import TEST_KEY
from tests.support.emulator import DEFAULT_MODEL, Emulator, RecordedRequest, Reply
from tir_transport import forget_endpoints

# Generous: a scenario waits on a real socket, never on a clock.
TIMEOUT = 30.0


@dataclass
class Outcome:
    """What one side gave: its value or its error, and the bodies it sent."""

    value: Any = None
    error: BaseException | None = None
    bodies: list[dict[str, Any]] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)

    @property
    def request(self) -> RecordedRequest:
        """The only (or last) POST: its path, query and headers."""
        assert self.requests, "no request was sent"
        return self.requests[-1]

    @property
    def body(self) -> dict[str, Any]:
        """The only (or last) request body."""
        assert self.bodies, "no request was sent"
        return self.bodies[-1]

    def raised(self) -> str | None:
        """The kind of error: langchain-core's class for it, else the class's own name.

        Both LangChain classes raise errors that are also langchain-core's
        (`ModelInvalidRequestError`...); openai's and ours share names (`BadRequestError`).
        """
        if self.error is None:
            return None
        for cls in type(self.error).__mro__:
            if cls.__module__ == "langchain_core.exceptions":
                return cls.__name__
        return type(self.error).__name__


def run(
    emulator: Emulator,
    action: Callable[[], Any],
    *,
    setup: Callable[[Emulator], None] | None = None,
    replies: tuple[Reply, ...] = (),
) -> Outcome:
    """Run `action` on a fresh emulator: `setup` turns knobs, `replies` are queued first."""
    emulator.reset()
    forget_endpoints()
    if setup is not None:
        setup(emulator)
    emulator.queue(*replies)
    outcome = Outcome()
    try:
        outcome.value = action()
    except Exception as e:  # the scenario compares errors too
        outcome.error = e
    outcome.requests = [r for r in emulator.requests if r.method == "POST"]
    outcome.bodies = [r.json for r in outcome.requests]
    return outcome


def side_by_side(
    emulator: Emulator,
    peer: Callable[[], Any],
    ours: Callable[[], Any],
    *,
    setup: Callable[[Emulator], None] | None = None,
    replies: tuple[Reply, ...] = (),
) -> tuple[Outcome, Outcome]:
    """The peer's outcome and ours, for the same server, knobs and scripted replies."""
    return (
        run(emulator, peer, setup=setup, replies=replies),
        run(emulator, ours, setup=setup, replies=replies),
    )


# -- the four chat classes, aimed at the emulator ------------------------------------------------


def chat_openai(emulator: Emulator, **kwargs: Any) -> ChatOpenAI:
    """ChatOpenAI as users point it at TIR (base_url, key, model), retries off."""
    options: dict[str, Any] = {
        "base_url": emulator.base_url,
        "api_key": TEST_KEY,
        "model": DEFAULT_MODEL,
        "max_retries": 0,
        "timeout": TIMEOUT,
    }
    return ChatOpenAI(**{**options, **kwargs})


def chat_tir(emulator: Emulator, **kwargs: Any) -> ChatTIRLlama:
    """ChatTIRLlama on the same endpoint, retries off."""
    options: dict[str, Any] = {
        "base_url": emulator.base_url,
        "api_key": TEST_KEY,
        "max_retries": 0,
        "timeout": TIMEOUT,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown arguments are request fields, with a warning
        return ChatTIRLlama(**{**options, **kwargs})


def openai_like(emulator: Emulator, **kwargs: Any) -> OpenAILike:
    """OpenAILike as its docs set it up for a chat model with tools, retries off."""
    options: dict[str, Any] = {
        "api_base": emulator.base_url,
        "api_key": TEST_KEY,
        "model": DEFAULT_MODEL,
        "is_chat_model": True,
        "is_function_calling_model": True,
        "max_retries": 0,
        "timeout": TIMEOUT,
    }
    return OpenAILike(**{**options, **kwargs})


def tir_llm(emulator: Emulator, **kwargs: Any) -> TIRLlamaLLM:
    """TIRLlamaLLM on the same endpoint, retries off."""
    options: dict[str, Any] = {
        "base_url": emulator.base_url,
        "api_key": TEST_KEY,
        "max_retries": 0,
        "timeout": TIMEOUT,
    }
    return TIRLlamaLLM(**{**options, **kwargs})


# -- what the model sees ---------------------------------------------------------------------------


def seen_text(content: Any) -> str:
    """A message's content as vLLM gives it to the chat template: text parts joined by "\\n"."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(str(part.get("text", "")) for part in content if part.get("type") == "text")


def model_sees(body: dict[str, Any]) -> list[tuple[str, str, list[tuple[str, Any]]]]:
    """The conversation as the model sees it: role, text, and tool calls (name, arguments)."""
    seen = []
    for message in body["messages"]:
        calls = [
            (c["function"]["name"], _arguments(c["function"].get("arguments")))
            for c in message.get("tool_calls") or []
        ]
        seen.append((message["role"], seen_text(message.get("content")), calls))
    return seen


def _arguments(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
