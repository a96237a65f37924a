"""The chat API over the shared HTTP layer: requests, streams, and the endpoint's fallbacks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Generator, Iterator, Mapping
from dataclasses import replace
from typing import Any

import httpx

from ._config import TIRConfig
from ._errors import StreamInterruptedError, TIRError, scrub_secret
from ._http import (
    LIMIT_FIELDS,
    ClientCache,
    HTTPClient,
    _request_id,
    _transport_error,
    cached_client,
    limits_of,
)
from ._limits import Limits
from ._negotiate import Negotiation
from ._retry import RetryPolicy
from ._sse import ServerSentEvent, SSEDecoder
from ._tools import ToolMode
from ._usage import Usage, record_usage
from ._wire import DONE, ChatChunk, ChatCompletion, parse_chunk, parse_completion

__all__ = ["ClientCache", "TIRClient", "client_for"]


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


class TIRClient(HTTPClient):
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
    ) -> None:
        """Create a client; no I/O happens here.

        Args:
            config: where and how to connect.
            retry: the retry policy (default: `config.max_retries` with backoff).
            tool_mode: how tools are sent. `"auto"` sends them natively and, if the endpoint
                rejects them (vLLM without tool parsing), in the prompt, remembering that for
                the endpoint; `"native"` and `"prompt"` force one way.
            limits: requests in flight and per minute (see `Limits`).
        """
        if tool_mode not in ("auto", "native", "prompt"):
            raise ValueError(f"tool_mode must be 'auto', 'native' or 'prompt', got {tool_mode!r}")
        super().__init__(config, retry=retry, limits=limits)
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
            e.request_id = _request_id(response.headers)
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
                    client.stream("POST", url, content=body, headers=headers) as response,
                ):
                    if response.status_code >= 400:
                        response.read()
                        error = self._status_error(response)
                    else:
                        reading = True
                        state = _StreamState(_request_id(response.headers), self.config.secret())
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

    async def _astream_once(self, payload: Mapping[str, Any]) -> AsyncGenerator[ChatChunk, None]:
        url, headers, body = self._prepare(payload)
        client = await self._async_client()
        attempt = 0
        while True:
            started = reading = False
            request = client.build_request("POST", url, content=body, headers=headers)
            try:
                async with self._aslot():
                    # send(stream=True) and aclose(), not `async with client.stream()`: that
                    # one is an async generator of its own, and when an abandoned stream is
                    # closed at loop shutdown, asyncio closes every async generator at once;
                    # closing it from here too then fails ("already running").
                    response = await client.send(request, stream=True)
                    try:
                        if response.status_code >= 400:
                            await response.aread()
                            error = self._status_error(response)
                        else:
                            reading = True
                            state = _StreamState(
                                _request_id(response.headers), self.config.secret()
                            )
                            decoder = SSEDecoder()
                            async for raw in response.aiter_bytes():
                                for event in decoder.feed(raw):
                                    chunk = state.on_event(event)
                                    if chunk is not None:
                                        started = True
                                        yield chunk
                            decoder.flush()
                            self._finish_stream(state, url, bool(payload.get("tools")))
                            return
                    finally:
                        await response.aclose()
            except httpx.HTTPError as e:
                error = _transport_error(e, url, in_stream=reading)
                error.__cause__ = e
            except TIRError as e:
                error = e
            if started or _second_empty(error, attempt):
                raise error
            await asyncio.sleep(self._backoff(error, attempt, url))
            attempt += 1

    # -- public: one request, with the fallbacks the endpoint forces -------------------------

    def _negotiation(self, payload: Mapping[str, Any]) -> Negotiation:
        return Negotiation(payload, self._url(payload), self.tool_mode)

    def create(self, payload: Mapping[str, Any]) -> ChatCompletion:
        """Send a non-streamed request and return the reply.

        Tools and JSON schemas fall back to what the endpoint takes (see `tool_mode`).

        Raises:
            TIRError: a subclass for each kind of failure, after the retries the policy allows.
        """
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

    async def astream(self, payload: Mapping[str, Any]) -> AsyncGenerator[ChatChunk, None]:
        """Async twin of `stream`; cancelling the consumer closes the connection."""
        negotiation = self._negotiation(payload)
        body = negotiation.payload()
        while True:
            if negotiation.checks_replies():
                try:
                    chunks = [chunk async for chunk in self._astream_once(body)]
                except TIRError as e:
                    body = negotiation.on_error(e)
                    continue
                result = negotiation.on_completion(_whole(chunks))
                if isinstance(result, ChatCompletion):
                    for chunk in _checked(chunks, result):
                        yield chunk
                    return
                body = result
                continue
            started = False
            watch = negotiation.stream_filter()
            try:
                # Not closed from here: a cancel or an error unwinds through it (closing the
                # response at once), and one abandoned is closed by asyncio; closing it here
                # too would race asyncio's own close at loop shutdown ("already running").
                async for chunk in self._astream_once(body):
                    out = watch.process(chunk) if watch else chunk
                    if out is not None:
                        started = True
                        yield out
                return
            except TIRError as e:
                if started:
                    raise
                body = negotiation.on_error(e)


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


def client_for(owner: Any, cached: ClientCache | None) -> tuple[tuple[Any, ...], TIRClient]:
    """The chat client for an adapter's current settings (see `cached_client`).

    `owner` carries the fields of `CONFIG_FIELDS` and `tool_mode`.
    """
    return cached_client(
        owner,
        cached,
        ("tool_mode", *LIMIT_FIELDS),
        lambda config: TIRClient(config, tool_mode=owner.tool_mode, limits=limits_of(owner)),
    )
