"""The chat API over the shared HTTP layer: requests, streams, and the endpoint's fallbacks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Generator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any

import httpx

from ._chat_wire import DONE, ChatChunk, ChatCompletion, parse_chunk, parse_completion
from ._config import TIRConfig
from ._errors import StreamInterruptedError, TIRError, request_id_of, scrub_secret
from ._http import HTTPClient, _transport_error
from ._limits import Limits, _AsyncSlot
from ._negotiate import Negotiation, negotiates
from ._retry import RetryPolicy
from ._sse import ServerSentEvent, SSEDecoder
from ._tool_stream import TextToolCallFilter
from ._tools import ToolMode
from ._usage import Usage, record_usage

__all__ = ["AsyncChatStream", "ChatClient"]


class _StreamState:
    """What a stream has shown so far; decides whether its end was a real end."""

    __slots__ = ("done", "events", "finish_reason", "model", "request_id", "secret", "usage")

    def __init__(self, request_id: str | None, secret: str) -> None:
        self.request_id = request_id
        self.secret = secret
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.done = False
        self.events = 0

    def on_event(self, event: ServerSentEvent) -> ChatChunk | None:
        """The chunk of one event, or None for `[DONE]` and for events after it."""
        self.events += 1
        if self.done:
            return None
        data = event.data
        if data == DONE:
            self.done = True
            return None
        if event.event == "error":
            # Some gateways name the event instead of shaping the data.
            try:
                payload = json.loads(data)
            except ValueError:
                payload = {"message": data}
            if not isinstance(payload, dict):
                payload = {"message": data}
            payload.setdefault("object", "error")
            data = json.dumps(payload)
        try:
            chunk = parse_chunk(data, request_id=self.request_id)
        except TIRError as e:
            scrubbed = scrub_secret(e.message, self.secret)
            if scrubbed != e.message:
                e.message = scrubbed
                e.args = (e.message,)
            raise
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.model:
            self.model = chunk.model
        return chunk

    def check_end(self, url: str, tools: bool) -> None:
        """Raise if the body ended before the reply did (a truncated stream is an error)."""
        if self.finish_reason is None:
            if not self.events:
                # Only what is known: no event came. With tools, one known cause is a server
                # that cannot stream tool calls (llama.cpp's answers so).
                hint = (
                    " The request carries tools, and some servers cannot stream tool calls "
                    "(llama.cpp's answers so): call without streaming, or with "
                    "tool_mode='prompt'."
                    if tools
                    else ""
                )
                error = StreamInterruptedError(
                    f"{url} sent an empty stream (HTTP 200 and no event at all): there is no "
                    f"answer.{hint}",
                    request_id=self.request_id,
                )
                error.empty_stream = True
                raise error
            how = "sent [DONE]" if self.done else "closed the stream"
            raise StreamInterruptedError(
                f"{url} {how} before the reply finished (no finish_reason): the answer is "
                "incomplete",
                request_id=self.request_id,
            )


class ChatClient(HTTPClient):
    """Sends chat requests for one configuration, sync or async, with retries and pooling.

    The pools, retries and error mapping are `HTTPClient`'s: one sync pool per process, one
    async pool per event loop, so the object works across `asyncio.run` calls and threads.
    """

    def __init__(
        self,
        config: TIRConfig,
        *,
        retry: RetryPolicy | None = None,
        tool_mode: ToolMode = "auto",
        limits: Limits | None = None,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
    ) -> None:
        """Create a client; no I/O happens here.

        Args:
            config: where and how to connect.
            retry: the retry policy (default: `config.max_retries` with backoff).
            tool_mode: how tools are sent. `"auto"` sends them natively and, if the endpoint
                rejects them (vLLM without tool parsing), in the prompt, remembering that for
                the endpoint; `"native"` and `"prompt"` force one way.
            limits: requests in flight and per minute (see `Limits`).
            http_client: your own `httpx.Client` (see `HTTPClient`).
            http_async_client: your own `httpx.AsyncClient` (see `HTTPClient`).
        """
        if tool_mode not in ("auto", "native", "prompt"):
            raise ValueError(f"tool_mode must be 'auto', 'native' or 'prompt', got {tool_mode!r}")
        super().__init__(
            config,
            retry=retry,
            limits=limits,
            http_client=http_client,
            http_async_client=http_async_client,
        )
        self.tool_mode: ToolMode = tool_mode

    # -- chat steps -------------------------------------------------------------------------

    def _url(self, payload: Mapping[str, Any]) -> str:
        model = payload.get("model")
        return self._api_url("chat/completions", model if isinstance(model, str) else None)

    def _prepare(self, payload: Mapping[str, Any]) -> tuple[str, dict[str, str], bytes]:
        url = self._url(payload)
        headers = self._request_headers(bool(payload.get("stream")))
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return url, headers, body

    def _completion(self, response: httpx.Response) -> ChatCompletion:
        data = self._json(response)
        try:
            completion = parse_completion(data)
        except TIRError as e:
            # The request id is looked up only when there is an error to attach it to.
            e.request_id = request_id_of(response.headers)
            raise
        record_usage(completion.model or self.config.model, completion.usage)
        return completion

    def _finish_stream(self, state: _StreamState, url: str, tools: bool) -> None:
        state.check_end(url, tools)
        record_usage(state.model or self.config.model, state.usage)

    # -- sync -------------------------------------------------------------------------------

    def _create_once(self, payload: Mapping[str, Any]) -> ChatCompletion:
        url, _, body = self._prepare(payload)
        return self._completion(self._post(url, body))

    def _stream_once(self, payload: Mapping[str, Any]) -> Generator[ChatChunk, None, None]:
        url, headers, body = self._prepare(payload)
        client = self._sync_client()
        attempt = 0
        while True:
            started = reading = False
            try:
                with (
                    self._slot(),
                    client.stream(
                        "POST", url, content=body, headers=headers, timeout=self._timeout
                    ) as response,
                ):
                    if response.status_code >= 400:
                        response.read()
                        error = self._status_error(response)
                    else:
                        reading = True
                        state = _StreamState(request_id_of(response.headers), self.config.secret())
                        decoder = SSEDecoder()
                        for raw in response.iter_bytes():
                            for event in decoder.feed(raw):
                                chunk = state.on_event(event)
                                if chunk is not None:
                                    started = True
                                    yield chunk
                        decoder.flush()
                        self._finish_stream(state, url, bool(payload.get("tools")))
                        return
            except httpx.HTTPError as e:
                error = _transport_error(e, url, in_stream=reading)
                error.__cause__ = e
            except TIRError as e:
                error = e
            if started or _second_empty(error, attempt):
                raise error
            time.sleep(self._backoff(error, attempt, url))
            attempt += 1

    # -- async ------------------------------------------------------------------------------

    async def _acreate_once(self, payload: Mapping[str, Any]) -> ChatCompletion:
        url, _, body = self._prepare(payload)
        return self._completion(await self._apost(url, body))

    # -- public: one request, with the fallbacks the endpoint forces -------------------------

    def _negotiation(self, payload: Mapping[str, Any]) -> Negotiation:
        return Negotiation(payload, self._url(payload), self.tool_mode)

    def create(self, payload: Mapping[str, Any]) -> ChatCompletion:
        """Send a non-streamed request and return the reply.

        Tools and JSON schemas fall back to what the endpoint takes (see `tool_mode`).

        Raises:
            TIRError: a subclass for each kind of failure, after the retries the policy allows.
        """
        if not negotiates(payload):
            return self._create_once(payload)  # the common case: no Negotiation to build
        negotiation = self._negotiation(payload)
        body = negotiation.payload()
        while True:
            try:
                completion = self._create_once(body)
            except TIRError as e:
                body = negotiation.on_error(e)
                continue
            result = negotiation.on_completion(completion)
            if isinstance(result, ChatCompletion):
                return result
            body = result

    def stream(self, payload: Mapping[str, Any]) -> Generator[ChatChunk, None, None]:
        """Send a streamed request and yield its chunks.

        Retries and fallbacks happen only before the first chunk is handed on. The response is
        closed on every exit: end, error, `break`, garbage collection.

        Raises:
            StreamInterruptedError: the stream broke off or carried an error event.
            TIRError: any other failure, after the retries the policy allows.
        """
        negotiation = self._negotiation(payload)
        body = negotiation.payload()
        while True:
            if negotiation.checks_replies():
                stream = self._stream_once(body)
                try:
                    chunks = list(stream)
                except TIRError as e:
                    body = negotiation.on_error(e)
                    continue
                finally:
                    stream.close()
                result = negotiation.on_completion(_whole(chunks))
                if isinstance(result, ChatCompletion):
                    yield from _checked(chunks, result)
                    return
                body = result
                continue
            started = False
            watch = negotiation.stream_filter()
            try:
                stream = self._stream_once(body)
                try:
                    for chunk in stream:
                        out = watch.process(chunk) if watch else chunk
                        if out is not None:
                            started = True
                            yield out
                finally:
                    stream.close()
                return
            except TIRError as e:
                if started:
                    raise
                body = negotiation.on_error(e)

    async def acreate(self, payload: Mapping[str, Any]) -> ChatCompletion:
        """Async twin of `create`."""
        if not negotiates(payload):
            return await self._acreate_once(payload)
        negotiation = self._negotiation(payload)
        body = negotiation.payload()
        while True:
            try:
                completion = await self._acreate_once(body)
            except TIRError as e:
                body = negotiation.on_error(e)
                continue
            result = negotiation.on_completion(completion)
            if isinstance(result, ChatCompletion):
                return result
            body = result

    def astream(self, payload: Mapping[str, Any]) -> AsyncChatStream:
        """Async twin of `stream`: `async for chunk in client.astream(payload)`.

        Closing it (`await stream.aclose()`), cancelling the task that reads it, or reading
        it to its end gives the connection back at once.
        """
        return AsyncChatStream(self, payload)


class AsyncChatStream:
    """The chunks of one streamed chat request (`ChatClient.astream`): an async iterator.

    Retries and fallbacks happen only before a chunk is handed on, as in `ChatClient.stream`.

    A class rather than an async generator, on purpose: when an event loop ends, asyncio
    closes every async generator still open, all at once, and a generator that closes another
    one in its own cleanup races that close ("aclose(): asynchronous generator is already
    running", logged at shutdown, for every stream a caller left with `break`). Nobody but
    its owner closes this object, so an adapter's generator may close it in `finally`.
    """

    def __init__(self, client: ChatClient, payload: Mapping[str, Any]) -> None:
        self._client = client
        self._negotiation = client._negotiation(payload)
        self._body = self._negotiation.payload()
        self._ready: deque[ChatChunk] = deque()
        self._handed_on = False  # a chunk reached the caller: no retry, no fallback from here
        self._finished = False
        self._error: TIRError | None = None  # raised once the chunks before it are read
        self._attempt = 0
        self._url = ""
        self._tools = False
        self._slot: AbstractAsyncContextManager[None] | None = None
        self._response: httpx.Response | None = None
        self._bytes: AsyncIterator[bytes] | None = None
        self._state: _StreamState | None = None
        self._decoder = SSEDecoder()
        self._received = False  # this attempt has produced a chunk
        self._watch: TextToolCallFilter | None = None
        # The whole reply, when the negotiation must check it before anything is handed on.
        self._whole: list[ChatChunk] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __aiter__(self) -> AsyncChatStream:
        return self

    async def __anext__(self) -> ChatChunk:
        try:
            while not self._ready:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                if self._finished:
                    raise StopAsyncIteration
                await self._advance()
        except BaseException:
            # Ended (an error, a cancel, the end): reading on must not send it again.
            self._finished = True
            await self._release()
            raise
        self._handed_on = True
        return self._ready.popleft()

    async def aclose(self) -> None:
        """Stop reading and give the connection back now."""
        self._finished = True
        self._ready.clear()
        await self._release()

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Left without aclose() (a `break`): the slot goes back now, so later requests of the
        # client do not wait for it forever, and the response is closed on its loop.
        # getattr: __init__ may have failed (a bad payload) before these were set.
        slot, self._slot = getattr(self, "_slot", None), None
        if isinstance(slot, _AsyncSlot):
            slot.release()
        response, self._response = getattr(self, "_response", None), None
        loop = getattr(self, "_loop", None)
        if response is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_close_later, loop, response)

    # -- steps ------------------------------------------------------------------------------

    async def _advance(self) -> None:
        if self._bytes is None:
            await self._open()
            return
        try:
            raw = await anext(self._bytes)
        except StopAsyncIteration:
            await self._end()
            return
        except httpx.HTTPError as e:
            error = _transport_error(e, self._url, in_stream=True)
            error.__cause__ = e
            await self._failed(error)
            return
        assert self._state is not None
        try:
            for event in self._decoder.feed(raw):
                chunk = self._state.on_event(event)
                if chunk is not None:
                    self._take(chunk)
        except TIRError as e:  # an error event, or a chunk that cannot be read
            await self._failed(e)

    async def _open(self) -> None:
        client = self._client
        self._url, headers, body = client._prepare(self._body)
        self._tools = bool(self._body.get("tools"))
        checked = self._negotiation.checks_replies()
        self._whole = [] if checked else None
        self._watch = None if checked else self._negotiation.stream_filter()
        self._received = False
        http = await client._async_client()
        self._loop = asyncio.get_running_loop()
        request = http.build_request(
            "POST", self._url, content=body, headers=headers, timeout=client._timeout
        )
        self._slot = client._aslot()
        await self._slot.__aenter__()
        try:
            response = await http.send(request, stream=True)
        except httpx.HTTPError as e:
            error = _transport_error(e, self._url)
            error.__cause__ = e
            await self._failed(error)
            return
        self._response = response
        if response.status_code >= 400:
            await response.aread()
            await self._failed(client._status_error(response))
            return
        self._state = _StreamState(request_id_of(response.headers), client.config.secret())
        self._decoder = SSEDecoder()
        self._bytes = response.aiter_bytes()

    def _take(self, chunk: ChatChunk) -> None:
        self._received = True
        if self._whole is not None:
            self._whole.append(chunk)
            return
        out = self._watch.process(chunk) if self._watch else chunk
        if out is not None:
            self._ready.append(out)

    async def _end(self) -> None:
        assert self._state is not None
        self._decoder.flush()
        try:
            self._client._finish_stream(self._state, self._url, self._tools)
        except TIRError as e:
            await self._failed(e)
            return
        await self._release()
        if self._whole is None:
            self._finished = True
            return
        result = self._negotiation.on_completion(_whole(self._whole))
        if isinstance(result, ChatCompletion):
            self._ready.extend(_checked(self._whole, result))
            self._finished = True
        else:
            self._body, self._attempt = result, 0  # one more request first (a fallback)

    async def _failed(self, error: TIRError) -> None:
        """Retry, fall back, or raise `error`; the connection is given back first."""
        await self._release()
        if self._handed_on or self._ready:
            # Chunks are out (or waiting to be read): the caller gets them, then the error.
            self._error, self._finished = error, True
            return
        if not self._received and not _second_empty(error, self._attempt):
            delay = self._client.retry.delay(error, self._attempt)
            if delay is not None:
                self._client._log_retry(self._url, delay, self._attempt, error)
                await asyncio.sleep(delay)
                self._attempt += 1
                return
        # Not (or no longer) retried: the negotiation may send it another way, or raises.
        self._body, self._attempt = self._negotiation.on_error(error), 0

    async def _release(self) -> None:
        self._bytes, self._state = None, None
        response, self._response = self._response, None
        slot, self._slot = self._slot, None
        try:
            if response is not None:
                await response.aclose()
        finally:
            if slot is not None:
                await slot.__aexit__(None, None, None)


def _close_later(loop: asyncio.AbstractEventLoop, response: httpx.Response) -> None:
    task = loop.create_task(response.aclose())
    _closing.add(task)  # held until done: the loop keeps only weak references to tasks
    task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()


def _second_empty(error: TIRError, attempt: int) -> bool:
    # An empty stream is tried once more (a server restarting may send one), not max_retries
    # times: a server that cannot answer this request answers it the same way every time.
    return attempt >= 1 and isinstance(error, StreamInterruptedError) and error.empty_stream


def _whole(chunks: list[ChatChunk]) -> ChatCompletion:
    """The reply a whole stream makes, to be checked as a non-streamed one is."""
    last = next((c for c in reversed(chunks) if c.finish_reason), None)
    return ChatCompletion(
        id=next((c.id for c in chunks if c.id), None),
        model=next((c.model for c in chunks if c.model), None),
        text="".join(c.text or "" for c in chunks),
        tool_calls=(),
        finish_reason=last.finish_reason if last else None,
        stop_reason=last.stop_reason if last else None,
        usage=next((c.usage for c in reversed(chunks) if c.usage is not None), None),
        raw={},
    )


def _checked(chunks: list[ChatChunk], reply: ChatCompletion) -> Iterator[ChatChunk]:
    """A checked reply as a stream: its (cleaned) text in one chunk, then the closing ones."""
    first = chunks[0] if chunks else None
    yield ChatChunk(
        id=reply.id,
        model=reply.model,
        text=reply.text,
        role=first.role if first else "assistant",
        tool_calls=(),
        finish_reason=None,
        stop_reason=None,
        usage=None,
        raw={},
    )
    for chunk in chunks:
        if chunk.finish_reason or chunk.usage is not None:
            yield replace(chunk, text=None)
