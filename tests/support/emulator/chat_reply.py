"""What a chat reply says: its pieces (honouring `stop` and the limit), usage, logprobs.

The whole (non-streamed) completion is here; `chat_stream` sends the same pieces as events.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.emulator.faults import Reply
from tests.support.emulator.server import Server

SEED_ID = "chat-b3b5ae1d266c428f894f05e33a39ea5b"
SEED_CREATED = 1738752367
SEED_PIECES = ["Hello", ".", " How", " can", " I", " assist", " you", " today", "?"]


def _max_tokens(payload: dict[str, Any]) -> Any:
    # vLLM: `max_completion_tokens or max_tokens` (OpenAI's newer name first).
    return payload.get("max_completion_tokens") or payload.get("max_tokens")


def _logprobs(payload: dict[str, Any], pieces: list[str]) -> dict[str, Any] | None:
    """vLLM's `logprobs` of a choice, when the request asks (`logprobs`, `top_logprobs`).

    Each piece is one token; its logprob is a fixed function of its position, and the
    alternatives are named `alt1`, `alt2`... so that a test knows every value.
    """
    if not payload.get("logprobs"):
        return None
    top = int(payload.get("top_logprobs") or 0)
    content = []
    for i, piece in enumerate(pieces):
        chosen = {"token": piece, "logprob": -0.125 * (i + 1), "bytes": list(piece.encode())}
        alternatives = [
            {"token": f"alt{k}", "logprob": -1.0 * k - 1, "bytes": list(f"alt{k}".encode())}
            for k in range(1, top)
        ]
        content.append({**chosen, "top_logprobs": [chosen, *alternatives][:top]})
    return {"content": content}


def _count_prompt_tokens(body: dict[str, Any]) -> int:
    # Deterministic stand-in for a tokenizer: words plus 4 per message (role, markers).
    total = 0
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        total += 4 + len(str(content or "").split())
    return total


class ChatReply(Server):
    """A chat reply's content, usage and whole completion, as vLLM makes them."""

    def _pieces(self, reply: Reply) -> list[str]:
        if reply.pieces is not None:
            return reply.pieces
        if reply.text is not None:
            words = reply.text.split(" ")
            return [w if i == 0 else " " + w for i, w in enumerate(words)]
        if reply.tool_calls:
            return []
        return list(SEED_PIECES)

    def _generate(self, payload: dict[str, Any], reply: Reply) -> tuple[list[str], str, Any]:
        """Pieces, finish_reason and stop_reason, honouring `stop` and `max_tokens` as vLLM does."""
        pieces = self._pieces(reply)
        finish = self._finish(reply)
        stop_reason: Any = None
        stops = payload.get("stop") or []
        if isinstance(stops, str):
            stops = [stops]
        text = "".join(pieces)
        cut = min(((text.find(s), s) for s in stops if s and s in text), default=None)
        if cut is not None:
            kept, pieces, stop_reason, finish = text[: cut[0]], [], cut[1], "stop"
            for piece in self._pieces(reply):
                if len("".join(pieces)) + len(piece) > len(kept):
                    rest = kept[len("".join(pieces)) :]
                    if rest:
                        pieces.append(rest)
                    break
                pieces.append(piece)
        limit = _max_tokens(payload)
        if isinstance(limit, int) and len(pieces) > limit:
            pieces, finish = pieces[:limit], "length"
        return pieces, finish, stop_reason

    def _usage(self, payload: dict[str, Any], reply: Reply, pieces: list[str]) -> dict[str, Any]:
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = _count_prompt_tokens(payload)
        completion = reply.completion_tokens
        if completion is None:
            completion = len(pieces) + sum(
                1 + len(str(c.get("arguments", ""))) // 4 for c in reply.tool_calls or []
            )
        # vLLM's field order.
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
        }
        if reply.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens}
        return usage

    def _finish(self, reply: Reply) -> str:
        return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")

    def _completion(self, payload: dict[str, Any], reply: Reply) -> dict[str, Any]:
        pieces, finish, stop_reason = self._generate(payload, reply)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(pieces) if pieces or not reply.tool_calls else None,
        }
        calls = [
            {
                "id": call.get("id") or f"chatcmpl-tool-{uuid.uuid4().hex}",
                "type": "function",
                "function": {"name": call["name"], "arguments": call.get("arguments", "{}")},
            }
            for call in reply.tool_calls or []
        ]
        if calls:  # vLLM leaves the key out of a reply without calls
            message["tool_calls"] = calls
        fingerprint = {"system_fingerprint": self.system_fingerprint}
        return {
            "id": reply.id or f"chat-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": reply.created or 1738753122,
            "model": reply.model or payload.get("model") or self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": _logprobs(payload, pieces),
                    "finish_reason": finish,
                    "stop_reason": stop_reason,
                }
            ],
            **(fingerprint if self.system_fingerprint else {}),
            "usage": None if reply.no_usage else self._usage(payload, reply, pieces),
            "prompt_logprobs": None,
        }
