"""Replies that once tripped the default engine (urllib3, aiohttp) where httpx held (review).

Each runs on every engine, sync and async, against a raw loopback server that writes exactly
the bytes a case needs (the emulator speaks only well-formed HTTP).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest

from tests.conftest import TEST_KEY
from tests.tir_transport.test_engine import ENGINES, MODES, run
from tir_transport import (
    APITimeoutError,
    ChatClient,
    StreamInterruptedError,
    TIRConfig,
    TIRError,
    build_payload,
    track_usage,
)

# What the handler writes for one request: the request's bytes and its number (from 1).
Handler = Callable[[socket.socket, bytes, int], None]


def _read_request(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        got = conn.recv(65536)
        if not got:
            return None
        data += got
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length:\s*(\d+)", head)
    while length and len(body) < int(length.group(1)):
        body += conn.recv(65536)
    return head


@contextmanager
def raw_server(handler: Handler) -> Iterator[str]:
    """A loopback server that answers every request of a kept-alive connection with `handler`."""
    listener = socket.create_server(("127.0.0.1", 0))
    count = [0]

    def serve(conn: socket.socket) -> None:
        with conn, suppress(OSError):
            while (head := _read_request(conn)) is not None:
                count[0] += 1
                handler(conn, head, count[0])

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        listener.close()


def completion(text: str) -> bytes:
    body = json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def event(text: str, finish: str | None = None) -> bytes:
    delta = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    choices = [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]
    return b"data: " + json.dumps({**delta, "choices": choices}).encode() + b"\n\n"


def call(base_url: str, engine: str, mode: str, stream: bool, **changes: Any) -> str | None:
    """One call (`test_engine.run`) on a client of `engine` aimed at `base_url`, no retries."""
    settings: dict[str, Any] = {"api_key": TEST_KEY, "base_url": base_url, "max_retries": 0}
    chat = ChatClient(TIRConfig.from_env(**{**settings, **changes}), engine=engine)  # type: ignore[arg-type]
    return run(
        chat, mode, stream, build_payload([{"role": "user", "content": "hi"}], "m", stream=stream)
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", ENGINES)
def test_interim_replies_are_skipped_not_taken_for_the_answer(engine: str, mode: str) -> None:
    # A 103 Early Hints before each answer: http.client skips only 100 Continue, and the
    # urllib3 engine once took the 103 for the reply, leaving the real one on the connection
    # for the next call to read as its own.
    def handler(conn: socket.socket, head: bytes, number: int) -> None:
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        conn.sendall(b"HTTP/1.1 102 Processing\r\n\r\n")
        conn.sendall(completion(f"answer {number}"))

    with raw_server(handler) as url:
        answers = []
        settings: dict[str, Any] = {"api_key": TEST_KEY, "base_url": url, "max_retries": 0}
        chat = ChatClient(TIRConfig.from_env(**settings), engine=engine)  # type: ignore[arg-type]
        payload = build_payload([{"role": "user", "content": "hi"}], "m")
        for _ in range(3):
            if mode == "sync":
                answers.append(chat.create(payload).text)
            else:
                answers.append(asyncio.run(chat.acreate(payload)).text)
    assert answers == ["answer 1", "answer 2", "answer 3"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", ENGINES)
def test_a_stream_shorter_than_its_content_length_is_an_interruption(
    engine: str, mode: str
) -> None:
    # Cut after the finish_reason: without its usage and [DONE], and short of the length the
    # server announced. The urllib3 engine once took the early end for the stream's end.
    sent = event("Hello") + event(" world", finish="stop")

    def handler(conn: socket.socket, head: bytes, number: int) -> None:
        head_out = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        conn.sendall(f"{head_out}Content-Length: {len(sent) + 200}\r\n\r\n".encode() + sent)
        conn.shutdown(socket.SHUT_RDWR)

    with raw_server(handler) as url, pytest.raises(StreamInterruptedError):
        call(url, engine, mode, stream=True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", ENGINES)
def test_a_tls_handshake_never_answered_is_a_connect_timeout_never_counted(
    engine: str, mode: str
) -> None:
    # Nothing was sent: no request to count. urllib3 once called it a read timeout (and the
    # request taken).
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        with suppress(OSError):
            while True:
                held.append(listener.accept()[0])  # taken, never answered

    threading.Thread(target=accept, daemon=True).start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}/v1"
    try:
        with track_usage() as usage, pytest.raises(APITimeoutError, match="ConnectTimeout"):
            call(url, engine, mode, stream=False, timeout=0.5)
    finally:
        listener.close()
        for conn in held:
            conn.close()
    assert usage.requests == 0


def shown(error: BaseException) -> str:
    """All a traceback or an error reporter could show of `error`, and what it chains."""
    texts = ["".join(traceback.format_exception(error))]
    current: BaseException | None = error
    while current is not None:
        texts += [repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


@pytest.mark.parametrize("where", ["chunk-size line", "header line"])
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", ENGINES)
def test_a_reply_that_echoes_the_key_where_it_cannot_be_parsed_never_shows_it(
    engine: str, mode: str, stream: bool, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The HTTP library's own error (urllib3's: raised from the ValueError of int(line, 16))
    # or its logged traceback (urllib3's header-parsing warning) quotes the bytes it could not
    # read; a gateway may echo the Authorization value there.
    def handler(conn: socket.socket, head: bytes, number: int) -> None:
        found = re.search(rb"(?i)authorization: ([^\r]+)", head)
        echoed = found.group(1) if found else b""
        if where == "header line":  # no colon
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nX-Echo " + echoed + b"\r\nContent-Length: 2\r\n\r\n{}"
            )
        else:
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: text/event-stream\r\n\r\n" + echoed + b"\r\n"
            )
        conn.shutdown(socket.SHUT_RDWR)

    with caplog.at_level(logging.DEBUG), raw_server(handler) as url:
        try:
            call(url, engine, mode, stream=stream)
        except TIRError as e:
            assert TEST_KEY not in shown(e)
    for record in caplog.records:
        assert TEST_KEY not in record.getMessage()
        if record.exc_info:
            assert TEST_KEY not in shown(record.exc_info[1])  # type: ignore[arg-type]
        assert TEST_KEY not in (record.exc_text or "")
