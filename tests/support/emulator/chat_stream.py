"""A streamed chat reply: vLLM's server-sent events, and the stream faults of `Reply`."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from tests.support.emulator.chat_reply import SEED_CREATED, SEED_ID, ChatReply, _logprobs
from tests.support.emulator.faults import Reply
from tests.support.emulator.wire import _dumps, _error_body


class ChatStream(ChatReply):
    """The events of a streamed reply and how they are written (cut, stalled, split...)."""

    def _events(self, payload: dict[str, Any], reply: Reply) -> list[str]:
        if reply.raw_events is not None:
            return list(reply.raw_events)
        pieces, finish, stop_reason = self._generate(payload, reply)
        head = {
            "id": reply.id or (SEED_ID if reply == Reply() else f"chat-{uuid.uuid4().hex}"),
            "object": "chat.completion.chunk",
            "created": reply.created or SEED_CREATED,
            "model": reply.model or payload.get("model") or self.model,
        }
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            content = delta.get("content")
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": _logprobs(payload, [content]) if content else None,
                "finish_reason": finish,
            }
            if finish is not None:
                choice["stop_reason"] = stop_reason
            value: dict[str, Any] = {**head, "choices": [choice]}
            if reply.usage_null:
                value["usage"] = None
            return _dumps(value)

        events = [chunk({"role": "assistant"})]
        events += [chunk({"content": p}) for p in pieces]
        for index, call in enumerate(reply.tool_calls or []):
            call_id = call.get("id") or f"chatcmpl-tool-{uuid.uuid4().hex}"
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "id": call_id,
                                "type": "function",
                                "index": index,
                                "function": {"name": call["name"]},
                            }
                        ]
                    }
                )
            )
            arguments = str(call.get("arguments", "{}"))
            for start in range(0, len(arguments), 7):
                fragment = arguments[start : start + 7]
                delta: dict[str, Any] = {"index": index, "function": {"arguments": fragment}}
                if reply.repeat_tool_names:
                    delta.update(id=call_id, type="function")
                    delta["function"]["name"] = call["name"]
                events.append(chunk({"tool_calls": [delta]}))
        usage_follows = include_usage and not reply.no_usage
        fingerprint = {"system_fingerprint": self.system_fingerprint}
        if not reply.no_finish:
            # vLLM ends a tool call with an empty piece of its arguments, text with "".
            calls = reply.tool_calls or []
            closing: dict[str, Any] = {"content": ""}
            if calls:
                closing = {"tool_calls": [{"index": len(calls) - 1, "function": {"arguments": ""}}]}
            last = chunk(closing, finish)
            if self.system_fingerprint and not usage_follows:
                last = _dumps({**json.loads(last), **fingerprint})
            events.append(last)
        if usage_follows:
            usage = self._usage(payload, reply, pieces)
            usage_chunk: dict[str, Any] = {**head, "choices": [], "usage": usage}
            if self.system_fingerprint:
                usage_chunk.update(fingerprint)
            events.append(_dumps(usage_chunk))
        if not reply.no_done:
            events.append("[DONE]")
        return events

    async def _stream(
        self, payload: dict[str, Any], reply: Reply, writer: asyncio.StreamWriter
    ) -> bool:
        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            f"x-request-id: req-{uuid.uuid4().hex[:12]}\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        self._sent(200)
        writer.write(head.encode())
        end = "\r\n" if reply.crlf else "\n"
        for number, data in enumerate(self._events(payload, reply)):
            if reply.cut_after is not None and number >= reply.cut_after:
                await writer.drain()
                writer.transport.abort()
                return False
            if reply.stall_after is not None and number >= reply.stall_after:
                await writer.drain()
                await asyncio.sleep(reply.stall_seconds)
                writer.transport.abort()
                return False
            if reply.error_event_after is not None and number == reply.error_event_after:
                error = _error_body(reply.error_format, reply.message, 500)
                await self._write(writer, f"data: {_dumps(error)}{end}{end}".encode(), reply)
                break
            if reply.delay:
                await asyncio.sleep(reply.delay)
            text = f"data: {data}{end}{end}"
            if reply.comments:
                text = f": keep-alive{end}" + text
            await self._write(writer, text.encode(), reply)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _write(self, writer: asyncio.StreamWriter, data: bytes, reply: Reply) -> None:
        size = reply.split or len(data)
        for start in range(0, len(data), size):
            piece = data[start : start + size]
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            if reply.split:
                # Give the kernel a chance to deliver each piece as its own read.
                await asyncio.sleep(0.001)
