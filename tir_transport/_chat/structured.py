"""Structured output's fallbacks: what refusals say, and asking in words then checking."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .._errors import TIRError
from .tools import rejection_text, strip_wrapping
from .wire import ChatCompletion, message_text

__all__ = ["SchemaInstruction", "is_guided_json_rejection", "is_response_format_rejection"]


def is_response_format_rejection(error: TIRError) -> bool:
    """Whether the endpoint says it cannot take `response_format` json_schema."""
    message = rejection_text(error)
    return message is not None and ("response_format" in message or "json_schema" in message)


def is_guided_json_rejection(error: TIRError) -> bool:
    """Whether the endpoint says it cannot take vLLM's `guided_json` either."""
    message = rejection_text(error)
    return message is not None and (
        "guided" in message or "extra" in message or "not permitted" in message
    )


@dataclass(frozen=True, slots=True)
class SchemaInstruction:
    """The last structured-output fallback: ask in words, then check the reply.

    With `json_object`, the request also asks for JSON mode carrying the schema: vLLM then
    holds the reply to JSON, and llama.cpp's server to the schema itself.
    """

    schema: Mapping[str, Any]
    json_object: bool = True

    def apply(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The request with the schema as an instruction instead of a constraint."""
        body = {k: v for k, v in payload.items() if k not in ("response_format", "guided_json")}
        if self.json_object:
            body["response_format"] = {"type": "json_object", "schema": dict(self.schema)}
        instruction = (
            "Reply with only a JSON object that matches this JSON schema, with no other text "
            "and no code fence:\n" + json.dumps(self.schema)
        )
        messages = [dict(m) for m in payload.get("messages", ())]
        if messages and messages[0].get("role") == "system":
            messages[0]["content"] = message_text(messages[0].get("content")) + "\n\n" + instruction
        else:
            messages.insert(0, {"role": "system", "content": instruction})
        body["messages"] = messages
        return body

    def problem(self, text: str | None) -> str | None:
        """What is wrong with a reply, or None when it is a JSON object the schema asks for."""
        body = strip_wrapping(text or "")
        try:
            value = json.loads(body)
        except ValueError as e:
            return f"it is not JSON ({e})"
        if self.schema.get("type", "object") == "object":
            if not isinstance(value, dict):
                return "it is not a JSON object"
            missing = [k for k in self.schema.get("required", ()) if k not in value]
            if missing:
                return f"it lacks the required keys {missing}"
        return None

    def repair(self, payload: Mapping[str, Any], reply: str | None, problem: str) -> dict[str, Any]:
        """One more request that shows the model its reply and what is wrong with it."""
        body = dict(payload)
        body["messages"] = [
            *payload.get("messages", ()),
            {"role": "assistant", "content": reply or ""},
            {
                "role": "user",
                "content": f"That reply cannot be used: {problem}. Reply with only the "
                "corrected JSON object.",
            },
        ]
        return body

    def clean(self, completion: ChatCompletion) -> ChatCompletion:
        """The reply with any code fence around the JSON taken off."""
        return replace(completion, text=strip_wrapping(completion.text or ""))
