"""The clients against the emulator over real sockets, each test sync and async."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import pickle
import signal
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import TEST_KEY, Caller
from tests.support.emulator import Emulator, Reply
from tir_transport import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ChatClient,
    ConfigurationError,
    ContextLengthExceededError,
    InvalidResponseError,
    Limits,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
    TIRConfig,
    ToolCall,
    ToolCallAccumulator,
    Usage,
    build_payload,
    track_usage,
)

MakeClient = Callable[..., ChatClient]
SEED_TEXT = "Hello. How can I assist you today?"

# Run on both engines (urllib3/aiohttp and httpx): the behaviour must not depend on it.
pytestmark = pytest.mark.usefixtures("http_engine")


def payload(stream: bool = False, **params: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "Say hello"}]
    return build_payload(messages, "llama3_1_8b_instruct", stream=stream, **params)


def text_of(chunks: list[Any]) -> str:
    return "".join(c.text or "" for c in chunks)


def test_create(make_client: MakeClient, emulator: Emulator, call: Caller) -> None:
    completion = call.create(make_client(), payload(temperature=0.2, max_tokens=50))
    assert completion.text == SEED_TEXT
    assert completion.finish_reason == "stop"
    assert completion.usage == Usage(6, 9, 15)
    (request,) = emulator.requests
    assert request.json["temperature"] == 0.2
    assert request.json["max_tokens"] == 50
    assert request.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert request.query == {"project_id": ["1234"]}


def test_stream(make_client: MakeClient, call: Caller) -> None:
    chunks = call.stream(make_client(), payload(stream=True))
    assert text_of(chunks) == SEED_TEXT
    assert chunks[0].role == "assistant"
    assert chunks[-2].finish_reason == "stop"
    assert chunks[-1].usage == Usage(6, 9, 15)


def test_genai_url_form(emulator: Emulator, call: Caller) -> None:
    client = ChatClient(
        TIRConfig.from_env(
            api_key=TEST_KEY, project_id="p-77", host=emulator.url, model="llama3_1_8b_instruct"
        )
    )
    call.create(client, payload())
    assert (
        emulator.requests[0].path == "/project/p-77/genai/llama3_1_8b_instruct/v1/chat/completions"
    )
    assert emulator.requests[0].query == {"project_id": ["77"]}


def test_endpoint_url_form(emulator: Emulator, call: Caller) -> None:
    client = ChatClient(
        TIRConfig.from_env(api_key=TEST_KEY, project_id="77", host=emulator.url, endpoint_id="is-9")
    )
    call.stream(client, payload(stream=True))
    assert emulator.requests[0].path == "/project/p-77/endpoint/is-9/v1/chat/completions"


def test_environment_configuration(
    emulator: Emulator, call: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_TIR_ACCESS_TOKEN", "sdk-token")
    monkeypatch.setenv("E2E_TIR_PROJECT_ID", "5")
    monkeypatch.setenv("TIR_HOST", emulator.url)
    call.create(ChatClient(TIRConfig.from_env()), payload())
    request = emulator.requests[0]
    assert request.headers["authorization"] == "Bearer sdk-token"
    assert request.path.startswith("/project/p-5/genai/")


def test_missing_key_fails_before_any_connection(emulator: Emulator, call: Caller) -> None:
    client = ChatClient(TIRConfig.from_env(project_id="1", base_url=emulator.base_url))
    with pytest.raises(ConfigurationError, match="TIR_API_KEY"):
        call.create(client, payload())
    with pytest.raises(ConfigurationError, match="TIR_API_KEY"):
        call.stream(client, payload(stream=True))
    assert emulator.requests == []


def test_insecure_http_refused_before_connecting(call: Caller) -> None:
    client = ChatClient(TIRConfig.from_env(api_key=TEST_KEY, base_url="http://example.com/v1"))
    with pytest.raises(ConfigurationError, match="clear text"):
        call.create(client, payload())


# -- streams in every shape the wire may take --------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        Reply(crlf=True),
        Reply(split=1),
        Reply(split=3, pieces=["नम", "स्ते", " 👋", " ü"]),
        Reply(comments=True),
        Reply(usage_null=True),
        Reply(delay=0.01),
    ],
    ids=["crlf", "1-byte-reads", "split-utf8", "comments", "usage-null", "slow-chunks"],
)
def test_stream_variants(
    make_client: MakeClient, emulator: Emulator, call: Caller, reply: Reply
) -> None:
    emulator.queue(reply)
    chunks = call.stream(make_client(), payload(stream=True))
    expected = "".join(reply.pieces) if reply.pieces else SEED_TEXT
    assert text_of(chunks) == expected
    assert chunks[-1].usage is not None


def test_stream_tool_call_deltas(make_client: MakeClient, emulator: Emulator, call: Caller) -> None:
    emulator.queue(
        Reply(tool_calls=[{"id": "t-1", "name": "get_weather", "arguments": '{"city": "Paris"}'}])
    )
    chunks = call.stream(make_client(), payload(stream=True))
    acc = ToolCallAccumulator()
    for chunk in chunks:
        acc.add(chunk.tool_calls)
    assert acc.result() == [ToolCall("t-1", "get_weather", '{"city": "Paris"}')]
    assert any(c.finish_reason == "tool_calls" for c in chunks)


def test_create_tool_calls(make_client: MakeClient, emulator: Emulator, call: Caller) -> None:
    emulator.queue(Reply(tool_calls=[{"id": "t-1", "name": "f", "arguments": "{}"}]))
    completion = call.create(make_client(), payload())
    assert completion.tool_calls == (ToolCall("t-1", "f", "{}"),)
    assert completion.text is None


# -- errors and retries ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_retried_then_successful(
    make_client: MakeClient, emulator: Emulator, call: Caller, status: int
) -> None:
    emulator.queue(
        Reply(status=status, headers={"retry-after": "0"}),
        Reply(status=status, headers={"retry-after-ms": "10"}),
    )
    assert call.create(make_client(), payload()).text == SEED_TEXT
    assert len(emulator.requests) == 3


@pytest.mark.parametrize("status", [429, 503])
def test_stream_retried_before_first_event(
    make_client: MakeClient, emulator: Emulator, call: Caller, status: int
) -> None:
    emulator.queue(Reply(status=status, headers={"retry-after": "0"}))
    assert text_of(call.stream(make_client(), payload(stream=True))) == SEED_TEXT
    assert len(emulator.requests) == 2


@pytest.mark.parametrize(("status", "cls"), [(429, RateLimitError), (503, ServerError)])
def test_retries_exhausted(
    make_client: MakeClient, emulator: Emulator, call: Caller, status: int, cls: type[Exception]
) -> None:
    emulator.queue(*[Reply(status=status, message="try later", headers={"retry-after": "0"})] * 3)
    with pytest.raises(cls, match="try later") as info:
        call.create(make_client(max_retries=2), payload())
    assert len(emulator.requests) == 3
    assert info.value.status_code == status  # type: ignore[attr-defined]
    assert info.value.request_id.startswith("req-")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["create", "stream"])
def test_client_errors_never_retried(
    make_client: MakeClient,
    emulator: Emulator,
    call: Caller,
    status: int,
    cls: type[Exception],
    streaming: bool,
) -> None:
    emulator.queue(Reply(status=status, message="nope", error_format="flat"))
    with pytest.raises(cls, match="nope"):
        if streaming:
            call.stream(make_client(), payload(stream=True))
        else:
            call.create(make_client(), payload())
    assert len(emulator.requests) == 1


def test_wrong_key_is_an_authentication_error(
    make_client: MakeClient, emulator: Emulator, call: Caller
) -> None:
    emulator.require_key = "the-right-one"
    with pytest.raises(AuthenticationError) as info:
        call.create(make_client(), payload())
    assert TEST_KEY not in str(info.value)


def test_context_length(make_client: MakeClient, emulator: Emulator, call: Caller) -> None:
    emulator.max_context = 10
    with pytest.raises(ContextLengthExceededError, match="maximum context length is 10"):
        call.create(make_client(), payload(max_tokens=100))
    with pytest.raises(ContextLengthExceededError):
        call.stream(make_client(), payload(stream=True, max_tokens=100))


def test_connection_refused(call: Caller) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ChatClient(
        TIRConfig.from_env(api_key=TEST_KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    )
    with pytest.raises(APIConnectionError, match="could not connect"):
        call.create(client, payload())
    with pytest.raises(APIConnectionError):
        call.stream(client, payload(stream=True))


@pytest.mark.parametrize("cut_after", [3, 11], ids=["mid-content", "before-usage"])
def test_stream_cut_midway(
    make_client: MakeClient, emulator: Emulator, call: Caller, cut_after: int
) -> None:
    emulator.queue(Reply(cut_after=cut_after))
    with pytest.raises(StreamInterruptedError):
        call.stream(make_client(), payload(stream=True))
    assert len(emulator.requests) == 1  # events were handed on: never retried


def test_stream_cut_before_first_event_is_retried(
    make_client: MakeClient, emulator: Emulator, call: Caller
) -> None:
    emulator.queue(Reply(cut_after=0))
    assert text_of(call.stream(make_client(), payload(stream=True))) == SEED_TEXT
    assert len(emulator.requests) == 2


@pytest.mark.parametrize("fmt", ["flat", "nested"])
def test_error_event_mid_stream(
    make_client: MakeClient, emulator: Emulator, call: Caller, fmt: str
) -> None:
    emulator.queue(Reply(error_event_after=4, error_format=fmt, message="CUDA out of memory"))
    with pytest.raises(StreamInterruptedError, match="CUDA out of memory"):
        call.stream(make_client(), payload(stream=True))


@pytest.mark.parametrize(
    "reply",
    [Reply(no_finish=True), Reply(no_finish=True, no_done=True)],
    ids=["done-only", "nothing"],
)
def test_stream_without_finish_reason_is_an_error(
    make_client: MakeClient, emulator: Emulator, call: Caller, reply: Reply
) -> None:
    emulator.queue(reply)
    with pytest.raises(StreamInterruptedError, match="incomplete"):
        call.stream(make_client(), payload(stream=True))


# A stall far longer than the read timeout: the emulator's request ends only when it does.
STALL_SECONDS = 20.0


@pytest.mark.timing
def test_stream_that_stalls_times_out(
    make_client: MakeClient, emulator: Emulator, call: Caller
) -> None:
    emulator.queue(Reply(stall_after=3, stall_seconds=STALL_SECONDS))
    with pytest.raises(APITimeoutError):
        call.stream(make_client(timeout=0.3), payload(stream=True))
    # The client gave up while the stream was still stalled (the request has not ended at the
    # emulator), and did not try again.
    assert emulator.spans == [] and len(emulator.requests) == 1


def test_chunk_that_is_not_json(make_client: MakeClient, emulator: Emulator, call: Caller) -> None:
    emulator.queue(Reply(raw_events=["<html><body>502 Bad Gateway</body></html>"]))
    with pytest.raises(InvalidResponseError, match="not JSON: '<html><body>502"):
        call.stream(make_client(), payload(stream=True))


def test_a_reply_that_is_not_json_never_quotes_the_key(
    make_client: MakeClient, emulator: Emulator, call: Caller
) -> None:
    # A gateway's page echoing the request's headers, as a 200 body and as a stream chunk.
    page = f"<html>Authorization: Bearer {TEST_KEY}</html>"
    emulator.queue(Reply(body=page))
    with pytest.raises(InvalidResponseError, match="not JSON") as info:
        call.create(make_client(), payload())
    assert TEST_KEY not in str(info.value) and "Bearer **********" in str(info.value)
    # The key past the quoted length: hidden before the quote is cut, not a part of it shown.
    emulator.queue(Reply(body=" " * 360 + page))
    with pytest.raises(InvalidResponseError, match="not JSON") as info:
        call.create(make_client(), payload())
    assert TEST_KEY[:8] not in str(info.value)
    emulator.queue(Reply(raw_events=[page]))
    with pytest.raises(InvalidResponseError, match="not JSON") as info:
        call.stream(make_client(), payload(stream=True))
    assert TEST_KEY not in str(info.value) and "Bearer **********" in str(info.value)


@pytest.fixture
def broken_error_body() -> Iterator[tuple[str, list[int]]]:
    """A server whose 503 body breaks off (5 of the 100 bytes it announced); counts requests."""
    seen: list[int] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                seen.append(1)
                conn.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n"
                    b"Content-Type: text/plain\r\nretry-after: 0\r\n\r\nupstr"
                )

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1", seen
    listener.close()


def test_an_error_body_that_breaks_off_is_retried_and_mapped(
    make_client: MakeClient, broken_error_body: tuple[str, list[int]], call: Caller
) -> None:
    url, seen = broken_error_body
    with pytest.raises(APIConnectionError, match="failed"):
        call.stream(make_client(base_url=url, max_retries=2), payload(stream=True))
    assert len(seen) == 3  # the first try and two retries, sync and async alike


def test_plain_text_error_body(make_client: MakeClient, emulator: Emulator, call: Caller) -> None:
    emulator.queue(Reply(status=502, body="upstream connect error", headers={"retry-after": "0"}))
    emulator.queue(Reply(status=502, body="upstream connect error", headers={"retry-after": "0"}))
    with pytest.raises(ServerError, match="upstream connect error"):
        call.create(make_client(max_retries=1), payload())


# -- usage accounting -----------------------------------------------------------------------


def test_usage_tracked_for_create_and_stream(make_client: MakeClient, call: Caller) -> None:
    client = make_client()
    with track_usage() as usage:
        call.create(client, payload())
        call.stream(client, payload(stream=True))
    assert usage.requests == 2
    assert usage.usage == Usage(12, 18, 30)
    assert usage.by_model == {"llama3_1_8b_instruct": Usage(12, 18, 30)}


def test_stream_without_usage_counts_the_request_but_no_tokens(
    make_client: MakeClient, call: Caller
) -> None:
    with track_usage() as usage:
        chunks = call.stream(
            make_client(),
            build_payload(
                [{"role": "user", "content": "x"}], "m", stream=True, include_usage=False
            ),
        )
    assert all(c.usage is None for c in chunks)
    assert usage.requests == 1
    assert usage.total_tokens == 0


# -- lifetime -------------------------------------------------------------------------------


def test_connections_are_pooled(make_client: MakeClient, emulator: Emulator, call: Caller) -> None:
    client = make_client()
    before = emulator.connections
    if call.mode == "sync":
        for _ in range(5):
            client.create(payload())
            list(client.stream(payload(stream=True)))
    else:

        async def run() -> None:
            for _ in range(5):
                await client.acreate(payload())
                async for _chunk in client.astream(payload(stream=True)):
                    pass

        asyncio.run(run())
    assert emulator.connections - before == 1


def test_same_object_across_event_loops_and_no_unclosed_warnings(make_client: MakeClient) -> None:
    gc.collect()  # earlier tests' garbage is not this test's business
    client = make_client()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(3):
            assert asyncio.run(client.acreate(payload())).text == SEED_TEXT
        assert client.create(payload()).text == SEED_TEXT
        del client
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def wait_closed(emulator: Emulator, mark: int) -> None:
    """Wait until every connection opened after `mark` (`emulator.connections`) has closed.

    Earlier tests' connections (a pool not yet collected, a stream still stalling) do not count.
    """
    emulator.wait_until(lambda: emulator.open_since(mark) == 0, "the test's connections closed")


def test_loop_shutdown_closes_that_loops_connections(
    make_client: MakeClient, emulator: Emulator
) -> None:
    mark = emulator.connections
    client = make_client()
    asyncio.run(client.acreate(payload()))
    assert emulator.connections == mark + 1
    # The client is still referenced: only the loop's end closed it.
    pools = client.transport._pools
    assert pools._aio if client.transport._on_aiohttp() else pools._async
    wait_closed(emulator, mark)


def test_threads_each_with_their_own_loop(make_client: MakeClient) -> None:
    client = make_client()
    results: list[str | None] = []

    def worker() -> None:
        results.append(asyncio.run(client.acreate(payload())).text)
        results.append(client.create(payload()).text)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [SEED_TEXT] * 16


def test_break_closes_the_response(make_client: MakeClient, emulator: Emulator) -> None:
    mark = emulator.connections
    client = make_client()
    emulator.queue(Reply(delay=0.05))
    stream = client.stream(payload(stream=True))
    next(stream)
    stream.close()
    # The half-read connection is closed, not returned to the pool.
    assert emulator.connections == mark + 1
    wait_closed(emulator, mark)
    assert client.create(payload()).text == SEED_TEXT


def test_cancel_closes_the_connection(make_client: MakeClient, emulator: Emulator) -> None:
    mark = emulator.connections
    client = make_client()
    emulator.queue(Reply(delay=0.05))

    async def consume() -> None:
        async for _chunk in client.astream(payload(stream=True)):
            pass

    async def main() -> None:
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.15)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Still inside the loop: the pool is open, so only the cancel can have closed it.
        assert emulator.connections == mark + 1
        wait_closed(emulator, mark)

    asyncio.run(main())
    wait_closed(emulator, mark)


def test_pickle_gives_a_working_copy(make_client: MakeClient, call: Caller) -> None:
    client = make_client()
    client.create(payload())
    copy = pickle.loads(pickle.dumps(client))
    assert copy.transport._pools._sync is None
    assert call.create(copy, payload()).text == SEED_TEXT
    assert TEST_KEY not in repr(copy)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_recreates_clients(make_client: MakeClient) -> None:
    client = make_client()
    client.create(payload())

    def sync_pool() -> object:
        pools = client.transport._pools
        return pools._u3 if client.transport._engines_used()[0] else pools._sync

    parent_pool = sync_pool()
    assert parent_pool is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            ok = client.create(payload()).text == SEED_TEXT and sync_pool() not in (
                parent_pool,
                None,
            )
            os.write(write, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 10) == b"ok"
    assert sync_pool() is parent_pool
    assert client.create(payload()).text == SEED_TEXT


def test_no_key_in_logs(
    make_client: MakeClient,
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
    http_engine: str,
) -> None:
    emulator.queue(Reply(status=503, headers={"retry-after": "0"}))
    with caplog.at_level(logging.DEBUG):
        make_client().create(payload())
        list(make_client().stream(payload(stream=True)))
    assert "retrying" in caplog.text
    assert TEST_KEY not in caplog.text
    for record in caplog.records:
        assert TEST_KEY not in record.getMessage()
        assert TEST_KEY not in json.dumps([str(a) for a in (record.args or ())])
    # The HTTP layer's own debug records were among those searched, not only ours.
    layer = {"httpx", "httpcore"} if http_engine == "httpx" else {"urllib3"}
    assert layer <= {r.name.split(".")[0] for r in caplog.records}


def test_empty_stream_is_an_error_that_says_so(
    make_client: MakeClient, emulator: Emulator, call: Caller
) -> None:
    emulator.queue(*[Reply(raw_events=[], no_done=True)] * 3)
    with pytest.raises(StreamInterruptedError, match="empty stream"):
        call.stream(make_client(max_retries=2), payload(stream=True))
    assert len(emulator.requests) == 2  # tried once more, not once per retry allowed


def test_an_async_stream_left_with_break_frees_its_slot(emulator: Emulator) -> None:
    config = TIRConfig.from_env(api_key=TEST_KEY, base_url=emulator.base_url, timeout=5)
    client = ChatClient(config, limits=Limits(max_in_flight=1))

    async def main() -> str | None:
        emulator.queue(Reply(delay=0.05))
        async for _ in client.astream(payload(stream=True)):
            break  # no aclose(): the stream is dropped here
        # With its one slot still held, this would wait forever.
        return (await asyncio.wait_for(client.acreate(payload()), 5)).text

    assert asyncio.run(main()) == SEED_TEXT


def test_a_failed_async_stream_is_not_sent_again(
    make_client: MakeClient, emulator: Emulator
) -> None:
    emulator.queue(Reply(status=401, message="no"))
    client = make_client(max_retries=0)

    async def main() -> None:
        stream = client.astream(payload(stream=True))
        with pytest.raises(AuthenticationError):
            await anext(stream)
        with pytest.raises(StopAsyncIteration):
            await anext(stream)

    asyncio.run(main())
    assert len(emulator.requests) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_a_body_given_whole_with_n_above_one_is_refused_before_sending(
    make_client: MakeClient, emulator: Emulator, call: Caller, stream: bool
) -> None:
    # build_payload refuses n=2; a body built by hand must not slip past it: the server would
    # bill both answers, and a stream interleaves them into what reads as one text.
    body = {
        "model": "llama3_1_8b_instruct",
        "messages": [{"role": "user", "content": "hi"}],
        "n": 2,
        "stream": stream,
    }
    with pytest.raises(ValueError, match="n=2 is not supported"):
        if stream:
            call.stream(make_client(), body)
        else:
            call.create(make_client(), body)
    assert emulator.requests == []


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_a_forced_call_cut_by_max_tokens_is_a_cut_call_not_text(
    make_client: MakeClient, emulator: Emulator, call: Caller, stream: bool, choice: Any
) -> None:
    # vLLM 0.32 sends a forced call that max_tokens cut as the reply's text (../shared/vllm.md).
    cut = '{"name": "get_weather", "parameters": {"city": "Pa'
    emulator.queue(Reply(pieces=[cut[:20], cut[20:]], finish_reason="length"))
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    body = payload(stream=stream, tools=[tool], tool_choice=choice, max_tokens=9)
    if stream:
        chunks = call.stream(make_client(), body)
        accumulator = ToolCallAccumulator()
        for chunk in chunks:
            accumulator.add(chunk.tool_calls)
        text, calls = text_of(chunks), accumulator.result()
        finish = chunks[-1].finish_reason or chunks[-2].finish_reason
    else:
        completion = call.create(make_client(), body)
        text, calls = completion.text or "", list(completion.tool_calls)
        finish = completion.finish_reason
    assert not text
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Pa')]
    assert finish == "length"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_request_stopped_while_out_counts_as_sent(
    make_client: MakeClient, emulator: Emulator, mode: str
) -> None:
    # Sent, then Ctrl-C (sync) or a cancel (async) before the reply: the server may have taken
    # it, so it counts as a request without usage. The sync path did not count it.
    emulator.queue(Reply(stall_after=0, stall_seconds=5.0))
    client = make_client()
    with track_usage() as usage:
        if mode == "sync":
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            previous = signal.signal(signal.SIGALRM, signal.default_int_handler)
            try:
                with pytest.raises(KeyboardInterrupt):
                    client.create(payload())
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        else:

            async def main() -> None:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(client.acreate(payload()), 0.5)

            asyncio.run(main())
    assert (usage.requests, usage.requests_without_usage) == (1, 1)
    assert len(emulator.requests) == 1
