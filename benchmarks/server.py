"""A loopback chat, embeddings and rerank server fast enough never to be the bottleneck.

Raw asyncio protocol, replies precomputed per chunk count: no framework, no JSON parsing of
a chat request beyond two regular expressions. `max_tokens` in the request sets the number of
content chunks of a streamed reply. An embeddings request gets one fixed 384-float vector per
input (base64 or floats, as asked), and a rerank request vLLM's reply (a fixed score per text,
best first, cut to `top_n`), both after `--delay-ms` (the service's latency). Run as a
separate process so it does not share the client's GIL: `python benchmarks/server.py` prints
the port, then serves until killed.

`GET /stats` answers what the server saw since the last `GET /stats` (and starts counting
again): `{"requests": n, "seconds": s, "first": t0, "last": t1, "held": h}`, `s` from the
first request's arrival (`t0`, a `time.perf_counter` reading) to the last reply's sending
(`t1`), 0 when none came; a benchmark divides the one by the other, its rate with the
client's own start and end left out. `h` sums each request's time from arrival to reply:
`h / n` is the latency the server really gave (its delay, and its own lateness).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache, lru_cache
from typing import Any

_STREAM = re.compile(rb'"stream"\s*:\s*true')
_USAGE = re.compile(rb'"include_usage"\s*:\s*true')
_MAX_TOKENS = re.compile(rb'"max_(?:completion_)?tokens"\s*:\s*(\d+)')
TEXT = "Hello. How can I assist you today?"
DIMENSIONS = 384
DELAY = 0.0  # seconds before each embeddings or rerank reply
CHAT_DELAY = 0.0  # seconds before each non-streamed chat reply


class Stats:
    """Since the last `GET /stats`: requests, the first one's arrival, the last reply sent."""

    requests = 0
    first = 0.0
    last = 0.0
    held = 0.0  # arrival to reply, summed over the requests

    @classmethod
    def arrived(cls) -> float:
        now = time.perf_counter()
        if not cls.requests:
            cls.first = now
        cls.requests += 1
        return now

    @classmethod
    def take(cls) -> bytes:
        seconds = cls.last - cls.first if cls.requests else 0.0
        # The readings too: `time.perf_counter` is one clock for every process on Linux.
        answer = _dumps(
            {
                "requests": cls.requests,
                "seconds": max(0.0, seconds),
                "first": cls.first,
                "last": cls.last,
                "held": cls.held,
            }
        )
        cls.requests, cls.first, cls.last, cls.held = 0, 0.0, 0.0, 0.0
        return answer


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _response(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


@cache
def completion_reply() -> bytes:
    body = _dumps(
        {
            "id": "chat-bench",
            "object": "chat.completion",
            "created": 1738753122,
            "model": "llama3_1_8b_instruct",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": TEXT, "tool_calls": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                    "stop_reason": None,
                }
            ],
            "usage": {"prompt_tokens": 12, "total_tokens": 21, "completion_tokens": 9},
        }
    )
    return _response(body)


@lru_cache(maxsize=64)
def stream_reply(chunks: int, usage: bool) -> bytes:
    head = {"id": "chat-bench", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def event(choices: list[object], **extra: object) -> bytes:
        return b"data: " + _dumps({**head, "choices": choices, **extra}) + b"\n\n"

    def delta(d: dict[str, object], finish: str | None = None) -> list[object]:
        return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]

    events = [event(delta({"role": "assistant", "content": ""}))]
    events += [event(delta({"content": f" tok{i}"})) for i in range(chunks)]
    events.append(event(delta({"content": ""}, "stop")))
    if usage:
        stats = {"prompt_tokens": 12, "total_tokens": 12 + chunks, "completion_tokens": chunks}
        events.append(event([], usage=stats))
    events.append(b"data: [DONE]\n\n")
    # One HTTP chunk per event, as a token-by-token server frames them.
    framed = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    head_bytes = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    return head_bytes + framed


@lru_cache(maxsize=64)
def embeddings_reply(count: int, b64: bool) -> bytes:
    vector = [((i * 37) % 101) / 101.0 - 0.5 for i in range(DIMENSIONS)]
    encoded: object = (
        base64.b64encode(struct.pack(f"<{DIMENSIONS}f", *vector)).decode() if b64 else vector
    )
    data = [{"object": "embedding", "index": i, "embedding": encoded} for i in range(count)]
    body = _dumps(
        {
            "object": "list",
            "model": "e5",
            "data": data,
            "usage": {"prompt_tokens": 8 * count, "total_tokens": 8 * count},
        }
    )
    return _response(body)


def rerank_reply(request: dict[str, Any]) -> bytes:
    documents = request["documents"]
    # A fixed score per text (not per position): batches merge into one meaningful order.
    scored = [(hash(text) % 10_007 / 10_007, i, text) for i, text in enumerate(documents)]
    scored.sort(key=lambda s: (-s[0], s[1]))
    top_n = request.get("top_n")
    if top_n:
        scored = scored[:top_n]
    return _response(
        _dumps(
            {
                "id": "rerank-bench",
                "model": request.get("model"),
                "usage": {"total_tokens": 20 * len(documents)},
                "results": [
                    {"index": i, "document": {"text": text}, "relevance_score": score}
                    for score, i, text in scored
                ],
            }
        )
    )


class ChatProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request at a time per connection."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15 :].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            assert self.transport is not None
            path = head.split(b"\r\n", 1)[0]
            if path.startswith(b"get /stats"):
                self.transport.write(_response(Stats.take()))
                continue
            arrived = Stats.arrived()
            if b"/embeddings" in path or b"/rerank" in path:
                request = json.loads(body)
                if b"/rerank" in path:
                    reply = rerank_reply(request)
                else:
                    texts = request["input"]
                    count = 1 if isinstance(texts, str) else len(texts)
                    reply = embeddings_reply(count, request.get("encoding_format") == "base64")
                if DELAY:
                    # Replies may leave out of order; each connection has one request at a time.
                    asyncio.get_running_loop().call_later(DELAY, self.send, reply, arrived)
                else:
                    self.send(reply, arrived)
            elif _STREAM.search(body):
                found = _MAX_TOKENS.search(body)
                chunks = int(found.group(1)) if found else 500
                self.send(stream_reply(chunks, bool(_USAGE.search(body))), arrived)
            elif CHAT_DELAY:
                asyncio.get_running_loop().call_later(
                    CHAT_DELAY, self.send, completion_reply(), arrived
                )
            else:
                self.send(completion_reply(), arrived)

    def send(self, reply: bytes, arrived: float) -> None:
        assert self.transport is not None
        self.transport.write(reply)
        Stats.last = time.perf_counter()
        Stats.held += Stats.last - arrived


@contextmanager
def serving(*options: str) -> Iterator[str]:
    """Run this server in its own process for a benchmark; yields its base URL (`.../v1`).

    `options` are this script's (`--delay-ms`, `--chat-delay-ms`).
    """
    proc = subprocess.Popen([sys.executable, __file__, *options], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait()


def stats(url: str) -> dict[str, float]:
    """What the server at `url` (`serving`'s) saw since the last call; see the module's doc."""
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=10) as reply:
        answer: dict[str, float] = json.loads(reply.read())
    return answer


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ChatProtocol, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-ms", type=float, default=0.0, help="embeddings and rerank latency")
    parser.add_argument("--chat-delay-ms", type=float, default=0.0, help="chat latency")
    arguments = parser.parse_args()
    DELAY = arguments.delay_ms / 1000.0
    CHAT_DELAY = arguments.chat_delay_ms / 1000.0
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
