"""Keys as users hold them, keys echoed back, usage of every request, resources.

Each check runs where a user meets it: all six adapter classes (chat, embeddings and rerank in
both frameworks), the core, `tir-llama doctor` and the Ray path, over real loopback sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import logging
import os
import socket
import threading
import traceback
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from langchain_tir import ChatTIRLlama, TIREmbeddings
from langchain_tir import TIRRerank as LangChainRerank
from llama_index_tir import TIREmbedding
from llama_index_tir import TIRRerank as LlamaIndexRerank
from tests.support.emulator import Emulator, Reply
from tests.test_every_adapter import CHATS, CLASSES, IDS, acall, call, model_for, queue
from tir_llama import cli
from tir_transport import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    ChatClient,
    ConfigurationError,
    StreamInterruptedError,
    TIRConfig,
    TIRError,
    track_usage,
)

# Long, and every 10 characters of it unique: a leak of any part of it is found.
KEY = "tir-7Qm2xK9vLp4sRt8wYz3nB6cD1fG5hJ0kM"
PIECE = 10


def pieces(key: str = KEY) -> list[str]:
    return [key[i : i + PIECE] for i in range(len(key) - PIECE + 1)]


def texts_of(error: BaseException) -> list[str]:
    """Everything a user, a log or an error reporter can see of an error and its chain."""
    texts = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        texts += [repr(v) for v in getattr(current, "__dict__", {}).values()]
        current = current.__cause__ or current.__context__
    return texts


def assert_hidden(*texts: str, key: str = KEY) -> None:
    for text in texts:
        for piece in pieces(key):
            assert piece not in text, f"a piece of the key ({piece!r}) is shown: {text[:300]!r}"


@contextlib.contextmanager
def every_log_record() -> Iterator[list[logging.LogRecord]]:
    """Every record any logger emits, at every level, while the block runs."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def shown(records: list[logging.LogRecord]) -> list[str]:
    return [record.getMessage() for record in records]


def make(cls: type[Any], emulator: Emulator, key: str = KEY, **kwargs: Any) -> Any:
    options = {"max_retries": 0, **model_for(cls), **kwargs}
    return cls(api_key=key, base_url=emulator.base_url, **options)


# -- keys as users paste them ----------------------------------------------------------------

PASTED = {
    "newline": KEY + "\n",  # open("key").read()
    "crlf": KEY + "\r\n",  # a file saved on Windows
    "spaces": "  " + KEY + " ",  # a copy and paste
    "cr": KEY + "\r",
    "tab": "\t" + KEY,
}
BROKEN = {
    "nul": (KEY + "\x00", "control character (U+0000)"),
    "zero-width": (KEY + "\u200b", "zero-width space"),
    "bom": ("\ufeff" + KEY, "byte-order mark"),
    "inner-newline": (KEY[:12] + "\n" + KEY[12:], "U+000A"),
    "inner-space": (KEY[:12] + " " + KEY[12:], "U+0020"),
    "non-ascii": (KEY[:12] + "é" + KEY[12:], "not ASCII (U+00E9)"),
}


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("pasted", PASTED.values(), ids=PASTED.keys())
def test_a_pasted_key_is_stripped_and_works(
    cls: type[Any], pasted: str, emulator: Emulator
) -> None:
    instance = make(cls, emulator, key=pasted)
    assert call(instance)
    assert emulator.requests[-1].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("pasted", PASTED.values(), ids=PASTED.keys())
def test_a_pasted_key_from_the_environment_works_alike(
    cls: type[Any], pasted: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", pasted)
    instance = cls(base_url=emulator.base_url, max_retries=0, **model_for(cls))
    assert call(instance)
    assert emulator.requests[-1].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
def test_a_key_no_header_can_carry_is_refused_at_construction(
    cls: type[Any], case: tuple[str, str], emulator: Emulator
) -> None:
    broken, problem = case
    with every_log_record() as records, pytest.raises((ValidationError, ValueError)) as caught:
        make(cls, emulator, key=broken)
    message = str(caught.value)
    assert "API key (api_key)" in message and problem in message
    assert_hidden(*texts_of(caught.value), *shown(records))
    assert emulator.requests == []


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_a_broken_key_in_the_environment_names_the_variable(
    cls: type[Any], emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", KEY + "\u200b")
    with pytest.raises((ValidationError, ValueError)) as caught:
        cls(base_url=emulator.base_url, **model_for(cls))
    assert "API key (TIR_API_KEY)" in str(caught.value)
    assert_hidden(*texts_of(caught.value))


@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
def test_the_core_refuses_it_too(case: tuple[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="API key") as caught:
        TIRConfig.from_env(api_key=case[0], base_url="http://127.0.0.1:1/v1")
    assert_hidden(*texts_of(caught.value))
    assert TIRConfig.from_env(api_key=KEY + "\n").secret() == KEY


def test_an_empty_or_blank_key_is_no_key(emulator: Emulator) -> None:
    for blank in ("", " \n"):
        llm = ChatTIRLlama(api_key=blank, base_url=emulator.base_url)
        with pytest.raises(ConfigurationError, match="TIR_API_KEY"):
            llm.invoke("hi")
    assert emulator.requests == []


@pytest.mark.usefixtures("ray_local")
def test_the_ray_path_strips_a_pasted_key_and_refuses_a_broken_one(emulator: Emulator) -> None:
    import ray

    import ray_tir

    rows = [{"id": i, "prompt": f"question {i}"} for i in range(4)]
    options: dict[str, Any] = {"base_url": emulator.base_url, "concurrency": 1, "max_retries": 0}
    out = ray_tir.chat(ray.data.from_items(rows), api_key=KEY + "\n", **options).take_all()
    assert [r["error"] for r in out] == [None] * 4
    assert {r.headers["authorization"] for r in emulator.requests} == {f"Bearer {KEY}"}
    # A row whose reply echoes the key: its error column says what failed, without the key.
    emulator.queue(ECHOES["header"], ECHOES["past-the-cut"])
    out = ray_tir.chat(ray.data.from_items(rows[:2]), api_key=KEY, **options).take_all()
    errors = [r["error"] for r in out]
    assert all(e and "BadRequestError" in e for e in errors), errors
    assert_hidden(*errors)
    before = len(emulator.requests)
    with pytest.raises((ValidationError, ValueError)) as caught:
        ray_tir.chat(ray.data.from_items(rows), api_key=KEY + "\x00", **options).take_all()
    assert_hidden(*texts_of(caught.value))
    # The peers' names for the key are the key, never request fields; a secret-looking option
    # (by name, or holding the key) is refused on the driver, before any request.
    refusals: list[dict[str, Any]] = [{"hf_token": "hf_0123456789abcdef"}, {"user": KEY}]
    for refused in refusals:
        with pytest.raises(ValueError, match="refused") as caught:
            ray_tir.chat(ray.data.from_items(rows), api_key=KEY, **options, **refused)
        assert_hidden(*texts_of(caught.value))
    assert len(emulator.requests) == before
    out = ray_tir.chat(ray.data.from_items(rows[:1]), openai_api_key=KEY, **options).take_all()
    assert out[0]["error"] is None
    assert emulator.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in emulator.requests[-1].body.decode()


# -- a key echoed back by a gateway ---------------------------------------------------------

# What a gateway that echoes the Authorization value may send: in a header, in a short JSON
# error, far into a long one (past where a message is cut), JSON-escaped, or in a page.
LONG = "x" * 981  # "Bearer " and the key then straddle the 1,000th character
ECHOES = {
    "header": Reply(status=400, message="bad request", headers={"x-request-id": f"Bearer {KEY}"}),
    "json": Reply(status=400, message=f"bad request; you sent Authorization: Bearer {KEY}"),
    "past-the-cut": Reply(status=400, message=f"{LONG} Bearer {KEY} and more"),
    "page": Reply(status=502, body=f"<html><pre>Authorization: Bearer {KEY}</pre></html>"),
    "ok-but-not-json": Reply(status=200, body=f"<html>{LONG}Bearer {KEY}</html>"),
    "ok-but-not-the-format": Reply(
        status=200, body={"echo": f"Bearer {KEY}"}, headers={"x-request-id": f"Bearer {KEY}"}
    ),
}


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("echo", ECHOES.values(), ids=ECHOES.keys())
@pytest.mark.parametrize("way", ["sync", "async"])
def test_an_echoed_key_is_never_shown(
    cls: type[Any], echo: Reply, way: str, emulator: Emulator
) -> None:
    queue(cls, emulator, echo)
    instance = make(cls, emulator)
    with every_log_record() as records, pytest.raises(TIRError) as caught:
        if way == "sync":
            call(instance)
        else:
            asyncio.run(acall(instance))
    assert_hidden(*texts_of(caught.value), *shown(records))
    if echo.headers:  # the request id is kept, with the key hidden in it
        assert caught.value.request_id is not None
        assert "Bearer **********" in caught.value.request_id


@pytest.mark.parametrize("way", ["stream", "astream"])
def test_an_echoed_key_in_a_stream_error_event_is_never_shown(way: str, emulator: Emulator) -> None:
    event = json.dumps({"error": {"message": f"{LONG} Bearer {KEY}", "code": 500}})
    emulator.queue(Reply(raw_events=[event], headers={"x-request-id": f"Bearer {KEY}"}))
    llm = make(ChatTIRLlama, emulator)

    async def consume() -> None:
        async for _ in llm.astream("hi"):
            pass

    with every_log_record() as records, pytest.raises(StreamInterruptedError) as caught:
        if way == "stream":
            list(llm.stream("hi"))
        else:
            asyncio.run(consume())
    assert_hidden(*texts_of(caught.value), *shown(records))


def test_doctor_never_prints_an_echoed_key(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.queue(
        Reply(status=401, message=f"no such key: {KEY}", headers={"x-request-id": f"Bearer {KEY}"})
    )
    out = io.StringIO()
    monkeypatch.setenv("TIR_API_KEY", KEY + "\n")
    code = cli.main(["--base-url", emulator.base_url, "doctor"], out=out)
    assert code == 1
    assert "never shown" in out.getvalue() and "**********" in out.getvalue()
    assert_hidden(out.getvalue())


def test_the_models_probe_reads_through_the_same_reader(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # doctor's GET /models goes through the transport: key hidden, window read.
    emulator.max_model_len = 4096
    out = io.StringIO()
    monkeypatch.setenv("TIR_API_KEY", KEY)
    code = cli.main(["--base-url", emulator.base_url, "doctor"], out=out)
    assert code == 0, out.getvalue()
    assert "4,096 tokens served" in out.getvalue()
    models = [r for r in emulator.requests if r.path.endswith("/models")]
    assert len(models) == 1 and models[0].method == "GET"
    assert models[0].headers["authorization"] == f"Bearer {KEY}"


# -- usage: every request the server took counts ---------------------------------------------


def chat_stream(instance: Any) -> Iterator[Any]:
    if isinstance(instance, ChatTIRLlama):
        return iter(instance.stream("hi"))
    from llama_index.core.base.llms.types import ChatMessage

    return iter(instance.stream_chat([ChatMessage(role="user", content="hi")]))


async def achat_first(instance: Any) -> None:
    """Read one chunk of an async stream, then leave it (no aclose: as a `break` does)."""
    if isinstance(instance, ChatTIRLlama):
        stream = instance.astream("hi")
    else:
        from llama_index.core.base.llms.types import ChatMessage

        stream = await instance.astream_chat([ChatMessage(role="user", content="hi")])
    async for _ in stream:
        break


@pytest.mark.parametrize("cls", CHATS, ids=["ChatTIRLlama", "TIRLlamaLLM"])
def test_a_stream_left_after_one_chunk_counts(cls: type[Any], emulator: Emulator) -> None:
    instance = make(cls, emulator)
    with track_usage() as usage:
        for _ in chat_stream(instance):
            break
    assert (usage.requests, usage.requests_without_usage) == (1, 1)
    assert "1 of 1 requests reported no usage" in usage.summary()


@pytest.mark.parametrize("cls", CHATS, ids=["ChatTIRLlama", "TIRLlamaLLM"])
def test_an_async_stream_left_after_one_chunk_counts(cls: type[Any], emulator: Emulator) -> None:
    instance = make(cls, emulator)

    async def main() -> tuple[int, int]:
        with track_usage() as usage:
            await achat_first(instance)
        return usage.requests, usage.requests_without_usage

    assert asyncio.run(main()) == (1, 1)


FAULTS = {"cut": Reply(cut_after=2), "error-event": Reply(error_event_after=2)}


@pytest.mark.parametrize("cls", CHATS, ids=["ChatTIRLlama", "TIRLlamaLLM"])
@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_a_stream_cut_or_failed_midway_counts(
    cls: type[Any], fault: Reply, emulator: Emulator
) -> None:
    emulator.queue(fault)
    instance = make(cls, emulator)
    with track_usage() as usage, pytest.raises(StreamInterruptedError):
        for _ in chat_stream(instance):
            pass
    assert (usage.requests, usage.requests_without_usage) == (1, 1)


@pytest.mark.parametrize("cls", CHATS, ids=["ChatTIRLlama", "TIRLlamaLLM"])
def test_each_try_that_timed_out_counts(cls: type[Any], emulator: Emulator) -> None:
    emulator.queue(*[Reply(stall_after=0, stall_seconds=5)] * 3)
    instance = make(cls, emulator, max_retries=2, timeout=0.3)
    with track_usage() as usage, pytest.raises(APITimeoutError):
        call(instance)
    assert len(emulator.requests) == 3
    assert (usage.requests, usage.requests_without_usage) == (3, 3)
    assert usage.total_tokens == 0


def test_a_refused_request_is_not_counted_but_its_retry_is(emulator: Emulator) -> None:
    emulator.queue(Reply(status=429, headers={"retry-after": "0"}))
    llm = make(ChatTIRLlama, emulator, max_retries=1)
    with track_usage() as usage:
        llm.invoke("hi")
    assert emulator.statuses() == [429, 200]
    assert (usage.requests, usage.requests_without_usage) == (1, 0)
    assert usage.total_tokens > 0


def test_a_finished_stream_counts_once_with_its_usage(emulator: Emulator) -> None:
    llm = make(ChatTIRLlama, emulator)
    with track_usage() as usage:
        list(llm.stream("hi"))
    assert (usage.requests, usage.requests_without_usage) == (1, 0)
    assert usage.output_tokens > 0


# -- resources and failures --------------------------------------------------------------------


def sockets_to(port: int) -> int:
    """This process's open sockets whose far end is `port` on loopback (client ends only).

    Counted from /proc, not as all descriptors: other threads of a busy test session open
    and close descriptors of their own meanwhile (a CI run counted 8 more, none ours).
    """
    inodes = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{name}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    count += 1
    return count


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_loops_closed_by_hand_leave_no_sockets(cls: type[Any], emulator: Emulator) -> None:
    instance = make(cls, emulator)

    def one_loop(work: Any) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(work())
        finally:
            loop.close()  # no shutdown_asyncgens: what asyncio.run would have done

    async def stream() -> None:
        if cls in CHATS:
            await achat_first(instance)
        else:
            await acall(instance)

    one_loop(lambda: acall(instance))  # the first pool and its lasting pieces
    gc.collect()
    port = urllib.parse.urlsplit(emulator.base_url).port
    assert port is not None
    mark, before = emulator.connections, sockets_to(port)
    with socket.create_connection(("127.0.0.1", port)):  # the count sees a socket left open
        assert sockets_to(port) == before + 1
    for _ in range(15):
        one_loop(lambda: acall(instance))
        one_loop(stream)
    gc.collect()
    # At most the last closed loop's pool waits for the next loop. The emulator (in this
    # process) closes its end of each connection the client closed: waited for, then counted.
    emulator.wait_until(lambda: emulator.open_since(mark) <= 1, "the closed loops' sockets closed")
    # The client end of that last connection at most (the leak this guards against grew by
    # one socket per loop: 30 here).
    assert sockets_to(port) - before <= 1


@pytest.mark.timing
@pytest.mark.parametrize(
    "cls", [TIREmbeddings, TIREmbedding, LangChainRerank, LlamaIndexRerank], ids=IDS[1:2] + IDS[3:]
)
def test_a_failed_batch_is_raised_without_waiting_for_a_slow_one(
    cls: type[Any], emulator: Emulator
) -> None:
    # Two batches in flight together (held until both are); one fails at once, the other is
    # slow. The failure must come while the slow batch is still being waited for.
    failed = Reply(status=400, message="bad batch", hold_until_in_flight=2)
    slow = Reply(delay=30.0)
    queue(cls, emulator, failed, slow)
    size = "embed_batch_size" if cls is TIREmbedding else "batch_size"
    sizes: dict[str, Any] = {size: 1}
    instance = make(cls, emulator, timeout=3.0, max_concurrency=2, **sizes)
    texts = ["hi there", "hi again"]
    with pytest.raises(BadRequestError):
        call_two(instance, texts)
    waiting = [t for t in threading.enumerate() if t.name.startswith(("tir-embed", "tir-rerank"))]
    assert any(t.is_alive() for t in waiting), "the call waited for the slow batch"


def call_two(instance: Any, texts: list[str]) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    if isinstance(instance, TIREmbeddings):
        instance.embed_documents(texts)
    elif isinstance(instance, TIREmbedding):
        instance.get_text_embedding_batch(texts)
    elif isinstance(instance, LangChainRerank):
        instance.compress_documents([Document(page_content=t) for t in texts], "hi")
    else:
        nodes = [NodeWithScore(node=TextNode(text=t)) for t in texts]
        instance.postprocess_nodes(nodes, query_str="hi")


# -- proxies -------------------------------------------------------------------------------


class Proxy:
    """A forward proxy on loopback that records each request line and answers 502 itself."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.lines.append((await reader.readline()).decode("latin-1").strip())
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        body = b"upstream unreachable"
        writer.write(
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()
        writer.close()

    async def _stop(self) -> None:
        self._server.close()

    def close(self) -> None:
        # The server belongs to the loop's thread: closed there (closing it from this thread
        # raced the loop's own bookkeeping and failed a CI run).
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    server = Proxy()
    yield server
    server.close()


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_plain_http_through_a_remote_proxy_is_refused_before_sending(
    cls: type[Any], emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The target is loopback (allowed in plain http), but the proxy is not: the key would
    # cross the network in clear text. 192.0.2.1 is TEST-NET-1: never reached.
    monkeypatch.setenv("HTTP_PROXY", f"http://someone:{KEY}@192.0.2.1:3128")
    instance = make(cls, emulator)
    with pytest.raises(ConfigurationError, match=r"proxy http://192\.0\.2\.1:3128") as caught:
        call(instance)
    assert "NO_PROXY" in str(caught.value)
    assert_hidden(*texts_of(caught.value))
    assert emulator.requests == []


def test_the_environments_proxy_is_used_and_named(
    emulator: Emulator, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    llm = make(ChatTIRLlama, emulator)
    with pytest.raises(TIRError) as caught:
        llm.invoke("hi")
    assert f"through the proxy http://127.0.0.1:{proxy.port}" in str(caught.value)
    # httpx sends the absolute URL to a proxy: the request went there, not to the emulator.
    assert proxy.lines == [f"POST {emulator.base_url}/chat/completions HTTP/1.1"]
    assert emulator.requests == []


def test_no_proxy_sends_directly(
    emulator: Emulator, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert make(ChatTIRLlama, emulator).invoke("hi").content
    assert proxy.lines == [] and len(emulator.requests) == 1


@pytest.mark.parametrize("way", ["sync", "async", "stream"])
def test_a_connection_error_through_a_proxy_names_the_proxy(
    way: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy that is down: the error must say which hop failed.
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    client = ChatClient(
        TIRConfig.from_env(api_key=KEY, project_id="1", host="https://tir.invalid", max_retries=0)
    )
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(APIConnectionError) as caught:
        if way == "sync":
            client.create(payload)
        elif way == "async":
            asyncio.run(client.acreate(payload))
        else:
            list(client.stream({**payload, "stream": True}))
    assert f"through the proxy http://127.0.0.1:{port}" in str(caught.value)
    assert_hidden(*texts_of(caught.value))


def test_a_proxy_needs_no_key_check_for_https(monkeypatch: pytest.MonkeyPatch) -> None:
    # https through a plain-http proxy is a CONNECT tunnel: the key travels inside TLS.
    monkeypatch.setenv("HTTPS_PROXY", "http://192.0.2.1:3128")
    client = ChatClient(TIRConfig.from_env(api_key=KEY, project_id="1"))
    assert client.transport.url("chat/completions", None).startswith("https://")
    assert client.transport._proxy_shown == "http://192.0.2.1:3128"  # read, checked, not refused


# -- found in review: each failed before its fix -----------------------------------------------

WRAPPED = {
    "quoted": (f'"{KEY}"', "wrapped in quotes"),
    "single-quoted": (f"'{KEY}'", "wrapped in quotes"),
    "bearer": (f"Bearer {KEY}", "starts with 'Bearer '"),
    "env-line": (f"TIR_API_KEY={KEY}", "NAME=value"),
    "export-line": (f"export TIR_API_KEY={KEY}", "NAME=value"),
}


@pytest.mark.parametrize("case", WRAPPED.values(), ids=WRAPPED.keys())
def test_a_key_pasted_with_its_wrapping_is_refused_saying_so(
    case: tuple[str, str], emulator: Emulator
) -> None:
    with pytest.raises((ValidationError, ValueError)) as caught:
        make(ChatTIRLlama, emulator, key=case[0])
    assert case[1] in str(caught.value)
    assert_hidden(*texts_of(caught.value))


@pytest.mark.parametrize("cls", CHATS, ids=["ChatTIRLlama", "TIRLlamaLLM"])
def test_a_key_set_after_construction_is_cleaned_and_hidden(
    cls: type[Any], emulator: Emulator
) -> None:
    instance = cls(base_url=emulator.base_url, max_retries=0)
    instance.api_key = KEY + "\n"
    copy = instance.model_copy(update={"api_key": KEY})
    for each in (instance, copy):
        assert_hidden(repr(each), str(each))
        assert call(each)
        assert emulator.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    with pytest.raises(ConfigurationError) as caught:
        instance.api_key = KEY + "\x00"
    assert_hidden(*texts_of(caught.value))


@pytest.mark.parametrize("cls", CHATS, ids=["ChatTIRLlama", "TIRLlamaLLM"])
def test_a_cancelled_request_counts(cls: type[Any], emulator: Emulator) -> None:
    emulator.queue(Reply(stall_after=0, stall_seconds=5))
    instance = make(cls, emulator)

    async def main() -> tuple[int, int]:
        with track_usage() as usage:
            request = asyncio.ensure_future(acall(instance))
            await asyncio.to_thread(emulator.wait_until, lambda: emulator.in_flight == 1, "it")
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await request
        return usage.requests, usage.requests_without_usage

    assert asyncio.run(main()) == (1, 1)


def test_requests_count_under_the_model_they_named(emulator: Emulator) -> None:
    # The server says it ran another name: requests stay under the one asked for, invoke and
    # stream alike; tokens go under the server's name.
    emulator.queue(Reply(model="served/Llama-3.1-8B"), Reply(model="served/Llama-3.1-8B"))
    llm = make(ChatTIRLlama, emulator)
    with track_usage() as usage:
        llm.invoke("hi")
        list(llm.stream("hi"))
    assert usage.requests_by_model == {"llama3_1_8b_instruct": 2}
    assert list(usage.by_model) == ["served/Llama-3.1-8B"]
    assert usage.requests_without_usage_by_model == {}


def test_the_proxy_checked_is_the_proxy_used(
    emulator: Emulator, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read once per client: a proxy set in the environment later does not take a new event
    # loop's pool elsewhere, unchecked.
    llm = make(ChatTIRLlama, emulator)
    assert llm.invoke("hi").content
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    assert asyncio.run(llm.ainvoke("hi")).content
    assert proxy.lines == [] and len(emulator.requests) == 2


def test_your_own_sync_client_leaves_the_async_side_checked(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    monkeypatch.setenv("HTTP_PROXY", "http://192.0.2.1:3128")
    with httpx.Client(trust_env=False) as own:
        llm = make(ChatTIRLlama, emulator, http_client=own)
        with pytest.raises(ConfigurationError, match="through the proxy"):
            asyncio.run(llm.ainvoke("hi"))
    assert emulator.requests == []


def test_keys_are_forgotten_with_their_clients(emulator: Emulator) -> None:
    from tir_transport._transport import keys as held

    keys = [f"{KEY}-{n}" for n in range(50)]
    clients = [ChatClient(TIRConfig.from_env(api_key=k, base_url=emulator.base_url)) for k in keys]
    assert held.keys_in_use() >= set(keys)
    del clients
    gc.collect()
    assert not held.keys_in_use() & set(keys)


@pytest.mark.parametrize("holder", ["_pattern", "keys_in_use"])
def test_a_finalizer_that_logs_inside_the_key_filter_does_not_deadlock(
    emulator: Emulator, holder: str
) -> None:
    # The collector can run inside the block that holds the keys' lock, and a finalizer it
    # runs may log through httpcore (an httpx client closing its pool): back into the filter
    # on the same thread. With a plain lock that hung a whole CI rehearsal. Here the
    # "finalizer" is run from inside the holder, as the collector would run it.
    from tir_transport._transport import keys as held

    client = ChatClient(TIRConfig.from_env(api_key=KEY, base_url=emulator.base_url))
    logger = logging.getLogger("httpcore.connection")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    original = held._drain_released

    def drain_and_log() -> None:
        original()
        logger.debug("close.started key=%s", KEY)

    done = threading.Event()

    def run() -> None:
        getattr(held, holder)()
        done.set()

    held._drain_released = drain_and_log
    try:
        if holder == "_pattern":
            held._keys_pattern = None  # so that the holder builds it, lock held
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        assert done.wait(10), "the key filter deadlocked on its own lock"
    finally:
        held._drain_released = original
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert "close.started" in stream.getvalue() and KEY not in stream.getvalue()
    del client


def test_the_process_exits_without_waiting_for_an_abandoned_batch(emulator: Emulator) -> None:
    import subprocess
    import sys

    queue(TIREmbeddings, emulator, Reply(status=400, hold_until_in_flight=2), Reply(delay=30.0))
    script = (
        "from langchain_tir import TIREmbeddings\n"
        f"e = TIREmbeddings(api_key={KEY!r}, base_url={emulator.base_url!r}, model='e5',\n"
        "    batch_size=1, max_concurrency=2, max_retries=0)\n"
        "try:\n    e.embed_documents(['a b', 'c d'])\nexcept Exception as error:\n"
        "    print(type(error).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "BadRequestError" in done.stdout
    # The process has ended while the slow batch is still being answered: nobody waited.
    assert emulator.in_flight == 1
