"""The default engine (`engine="auto"`: urllib3 sync, aiohttp async) beside httpx's.

Each scenario runs sync and async on both engines against the emulator over real sockets;
what the caller gets (the reply, the error's class and message, the usage counted, what was
sent) must be the same. httpx is the oracle: it is what users' own clients run on. The
reliability and contract tests also run on both (tests/conftest.py, `http_engine`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply
from tir_transport import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ChatClient,
    EmbeddingsClient,
    RateLimitError,
    StreamInterruptedError,
    TIRConfig,
    TIRError,
    __version__,
    build_payload,
    track_usage,
)

ENGINES = ["httpx", "auto"]
MODES = ["sync", "async"]


def client(emulator: Emulator, engine: str, **changes: Any) -> ChatClient:
    settings = {"api_key": TEST_KEY, "base_url": emulator.base_url, "timeout": 5.0}
    return ChatClient(TIRConfig.from_env(**{**settings, **changes}), engine=engine)  # type: ignore[arg-type]


def hello(stream: bool = False) -> dict[str, Any]:
    messages = [{"role": "user", "content": "Say hello"}]
    return build_payload(messages, "llama3_1_8b_instruct", stream=stream)


def run(chat: ChatClient, mode: str, stream: bool, payload: dict[str, Any]) -> str | None:
    """One call, sync or async: its whole text."""

    async def call() -> str | None:
        if stream:
            return "".join([c.text or "" async for c in chat.astream(payload)])
        return (await chat.acreate(payload)).text

    if mode == "async":
        return asyncio.run(call())
    if stream:
        return "".join(c.text or "" for c in chat.stream(payload))
    return chat.create(payload).text


def outcome(
    emulator: Emulator, engine: str, stream: bool, mode: str, **changes: Any
) -> tuple[Any, ...]:
    """What a caller sees of one call: the text or the error, and the usage counted."""
    chat = client(emulator, engine, **changes)
    with track_usage() as usage:
        try:
            result: Any = run(chat, mode, stream, hello(stream=stream))
        except TIRError as e:
            # The emulator's own request ids are random: their places compared, not values.
            ids = re.sub(r"req-[0-9a-f]{12}", "req-N", e.request_id or "")
            result = (type(e).__name__, e.message, ids)
    return result, usage.requests, usage.total_tokens, usage.requests_without_usage


COMPRESSED = gzip.compress(
    json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "llama3_1_8b_instruct",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hello, unzipped"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
    ).encode()
)

SCENARIOS: dict[str, list[Reply]] = {
    "ok": [Reply()],
    "401": [Reply(status=401, headers={"x-request-id": "req-1"})],
    "429 then ok": [Reply(status=429, headers={"Retry-After": "0"}), Reply()],
    "500 every time": [Reply(status=500)] * 3,
    "reply not json": [Reply(body="<html>gateway</html>")],
    # Redirects are not followed (a 307 would resend the POST, key and all): the caller
    # gets the 3xx as httpx hands it on.
    "a redirect": [Reply(status=307, headers={"Location": "/v1/chat/completions"})],
    # A compressed reply (a gateway's gzip) is decoded on every engine, as httpx decodes it.
    "gzip reply": [Reply(body=COMPRESSED, headers={"content-encoding": "gzip"})],
    "request id sent twice": [
        Reply(status=400, headers={"x-request-id": "a"}, message="bad request"),
    ],
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_both_engines_give_the_caller_the_same(
    emulator: Emulator, scenario: str, stream: bool, mode: str
) -> None:
    if scenario in ("reply not json", "gzip reply") and stream:
        pytest.skip("the emulator sends these bodies whole, not as a stream's events")
    seen: list[Any] = []
    for engine in ENGINES:
        emulator.reset()
        emulator.queue(*SCENARIOS[scenario])
        seen.append(outcome(emulator, engine, stream, mode, max_retries=2))
        sent = [(r.method, r.path, r.json) for r in emulator.requests]
        seen.append(sent)
    assert seen[0] == seen[2]  # what the caller got
    assert seen[1] == seen[3]  # what the server got
    if scenario == "gzip reply":
        assert seen[0][0] == "hello, unzipped"


# A script's last lines, as many write them: an event loop used and never closed, the client
# dropped or not. On exit, aiohttp says "Unclosed client session" about a session left open;
# httpx says nothing about its pool. Neither must be heard.
LEFT_OPEN = """
import asyncio, gc, sys
from tir_transport import ChatClient, TIRConfig, build_payload
client = ChatClient(TIRConfig.from_env(api_key=sys.argv[1], base_url=sys.argv[2]))
loop = asyncio.new_event_loop()
body = build_payload([{"role": "user", "content": "hi"}], "m", stream=sys.argv[3] == "stream")
if sys.argv[3] == "stream":
    stream = client.astream(body)
    loop.run_until_complete(stream.__anext__())  # a stream left after its first chunk
else:
    print(loop.run_until_complete(client.acreate(body)).text)
if sys.argv[4] == "dropped":
    del client
    gc.collect()
elif sys.argv[4] == "made in a coroutine":  # collected while its loop still runs
    async def main() -> None:
        local = ChatClient(TIRConfig.from_env(api_key=sys.argv[1], base_url=sys.argv[2]))
        print((await local.acreate(build_payload(body["messages"], "m"))).text)
    loop.run_until_complete(main())
"""


@pytest.mark.parametrize("dropped", ["kept", "dropped", "made in a coroutine"])
@pytest.mark.parametrize("call", ["create", "stream"])
def test_a_loop_left_open_at_exit_is_quiet(emulator: Emulator, call: str, dropped: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LEFT_OPEN, TEST_KEY, emulator.base_url, call, dropped],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(emulator.requests) == (2 if dropped == "made in a coroutine" else 1)


# A forked child that exits normally runs the finalizers it inherited: it must not close the
# parent's connections (their epoll is shared: the parent's next reply would never be seen).
FORKED = """
import asyncio, atexit, os, sys, time
from tir_transport import ChatClient, TIRConfig, build_payload
config = TIRConfig.from_env(api_key=sys.argv[1], base_url=sys.argv[2], timeout=8.0)
client = ChatClient(config)
loop = asyncio.new_event_loop()
body = build_payload([{"role": "user", "content": "hi"}], "m")
loop.run_until_complete(client.acreate(body))
pid = os.fork()
if pid == 0:
    atexit._run_exitfuncs()  # what the child's normal exit runs
    os._exit(0)
os.waitpid(pid, 0)
started = time.monotonic()
loop.run_until_complete(client.acreate(body))
print(round(time.monotonic() - started, 2))
"""


def test_a_forked_child_leaves_the_parents_connections_alone(emulator: Emulator) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FORKED, TEST_KEY, emulator.base_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 4.0  # not the 8 s read timeout, then a retry
    assert len(emulator.requests) == 2


# Headers each engine writes for itself, with the same meaning on all (the connection's).
PER_ENGINE = {"connection", "host", "content-length"}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_every_engine_sends_the_same_headers(emulator: Emulator, stream: bool, mode: str) -> None:
    sent = []
    for engine in ENGINES:
        emulator.reset()
        run(client(emulator, engine), mode, stream, hello(stream=stream))
        (request,) = emulator.requests
        sent.append(
            {k.lower(): v for k, v in request.headers.items() if k.lower() not in PER_ENGINE}
        )
    assert sent[0] == sent[1]
    # Ours, not urllib3's, aiohttp's or httpx's own.
    assert sent[0]["user-agent"] == f"tir-llama/{__version__}"


@pytest.mark.parametrize("engine", ENGINES)
def test_default_headers_replace_the_user_agent(emulator: Emulator, engine: str) -> None:
    chat = client(emulator, engine, default_headers={"user-agent": "my-app/1.0"})
    run(chat, "sync", False, hello())
    (request,) = emulator.requests
    agents = [v for k, v in request.headers.items() if k.lower() == "user-agent"]
    assert agents == ["my-app/1.0"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", ENGINES)
def test_a_stream_cut_midway_is_an_interruption(emulator: Emulator, engine: str, mode: str) -> None:
    emulator.queue(Reply(cut_after=2))
    with pytest.raises(StreamInterruptedError, match=r"broke off|before the reply finished"):
        run(client(emulator, engine, max_retries=0), mode, True, hello(stream=True))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", ENGINES)
def test_a_stalled_stream_times_out(emulator: Emulator, engine: str, mode: str) -> None:
    emulator.queue(Reply(stall_after=1, stall_seconds=3))
    chat = client(emulator, engine, max_retries=0, timeout=0.5)
    with pytest.raises(APITimeoutError, match=r"timed out talking to .*ReadTimeout"):
        run(chat, mode, True, hello(stream=True))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", ENGINES)
def test_nothing_listening_is_a_connection_error(engine: str, mode: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chat = ChatClient(
        TIRConfig.from_env(api_key=TEST_KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0),
        engine=engine,  # type: ignore[arg-type]
    )
    with pytest.raises(APIConnectionError, match=r"could not connect to http://127\.0\.0\.1"):
        run(chat, mode, False, hello())


@pytest.mark.parametrize("mode", MODES)
def test_a_429_backs_off_every_request_on_the_default_engine_too(
    emulator: Emulator, mode: str
) -> None:
    emulator.queue(Reply(status=429, headers={"Retry-After": "1"}))
    chat = client(emulator, "auto", max_retries=0)
    with pytest.raises(RateLimitError):
        run(chat, mode, False, hello())
    assert chat.limits.active


def test_embeddings_on_the_default_engine_match_httpx(emulator: Emulator) -> None:
    texts = [f"text {i}" for i in range(70)]  # two batches, in flight together
    vectors = []
    for engine in ENGINES:
        config = TIRConfig.from_env(api_key=TEST_KEY, base_url=emulator.base_url, model="e")
        embedder = EmbeddingsClient(config, engine=engine)  # type: ignore[arg-type]
        vectors.append(asyncio.run(embedder.aembed(texts)))
        vectors.append(embedder.embed(texts))
    assert vectors[0] == vectors[1] == vectors[2] == vectors[3]


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(ValueError, match="engine must be 'auto' or 'httpx'"):
        ChatClient(TIRConfig.from_env(api_key=TEST_KEY), engine="curl")  # type: ignore[arg-type]


def test_the_engine_variable_chooses_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    config = TIRConfig.from_env(api_key=TEST_KEY)
    assert ChatClient(config).transport.engine == "auto"
    monkeypatch.setenv("TIR_HTTP_ENGINE", "HTTPX ")
    assert ChatClient(config).transport.engine == "httpx"
    assert ChatClient(config, engine="auto").transport.engine == "auto"  # given beats it
    monkeypatch.setenv("TIR_HTTP_ENGINE", "curl")
    with pytest.raises(TIRError, match="TIR_HTTP_ENGINE must be 'auto' or 'httpx'"):
        ChatClient(config)


@pytest.mark.parametrize("mode", MODES)
def test_a_401_on_the_default_engine_says_what_httpx_says(emulator: Emulator, mode: str) -> None:
    messages = []
    for engine in ENGINES:
        emulator.queue(Reply(status=401))
        with pytest.raises(AuthenticationError) as info:
            run(client(emulator, engine), mode, False, hello())
        messages.append(info.value.message)
    assert messages[0] == messages[1]


def chain(error: BaseException) -> str:
    """Every text a traceback or an error reporter could show of `error` and its causes."""
    texts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        texts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return "\n".join(texts)


def test_an_aiohttp_error_that_carries_the_request_is_not_chained() -> None:
    # aiohttp's ClientResponseError (a reply it could not parse, too many redirects) carries
    # the request, its Authorization header in clear, in its repr and args; found in review:
    # it was chained to our error, where a traceback or an error reporter shows it.
    import aiohttp
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    from tir_transport._transport.aio import aio_failure

    url = "http://127.0.0.1:1/v1/chat/completions"
    headers = CIMultiDictProxy(CIMultiDict({"Authorization": f"Bearer {TEST_KEY}"}))
    info = aiohttp.RequestInfo(URL(url), "POST", headers, URL(url))
    raw = aiohttp.ClientResponseError(info, (), status=400, message="Got more than 8190 bytes")
    assert TEST_KEY in repr(raw)  # what would have leaked
    error = aio_failure(raw, url, secret=TEST_KEY)
    assert TEST_KEY not in chain(error)
    assert "the connection to" in error.message  # after sending, as httpx's protocol error
    refused = aio_failure(aiohttp.ClientConnectionError("refused"), url, secret=TEST_KEY)
    assert refused.__cause__ is not None  # what holds no key stays chained


@pytest.fixture(scope="module")
def untrusted_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An https base URL on loopback whose certificate no CA signed (a self-signed one)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    names = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *names, *files],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                context.wrap_socket(conn, server_side=True).close()  # the client refuses it

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    yield f"https://127.0.0.1:{port}/v1"
    stop.set()
    socket.create_connection(("127.0.0.1", port)).close()  # wakes the accept() to see it
    thread.join(5)
    listener.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("engine", ENGINES)
def test_tls_is_verified_on_every_engine(untrusted_tls: str, engine: str, mode: str) -> None:
    config = TIRConfig.from_env(api_key=TEST_KEY, base_url=untrusted_tls, max_retries=0)
    chat = ChatClient(config, engine=engine)  # type: ignore[arg-type]
    with pytest.raises(APIConnectionError, match="could not connect") as info:
        run(chat, mode, False, hello())
    assert "CERTIFICATE_VERIFY_FAILED" in info.value.message
    assert TEST_KEY not in chain(info.value)
