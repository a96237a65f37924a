"""Sync and async shells over pooled httpx clients: send, read, retry; nothing else."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Generator, Mapping
from typing import Any

import httpx

from ._config import CONFIG_FIELDS, TIRConfig
from ._errors import (
    APIConnectionError,
    APITimeoutError,
    InvalidResponseError,
    StreamInterruptedError,
    TIRError,
    error_from_response,
)
from ._negotiate import Negotiation
from ._retry import RetryPolicy, parse_retry_after
from ._sse import ServerSentEvent, SSEDecoder
from ._tools import ToolMode
from ._usage import Usage, record_usage
from ._wire import DONE, ChatChunk, ChatCompletion, parse_chunk, parse_completion

__all__ = ["TIRClient"]

logger = logging.getLogger("tir_transport")

_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=30)


def _timeout(seconds: float) -> httpx.Timeout:
    # The read timeout also bounds the gap between two stream chunks.
    return httpx.Timeout(seconds, connect=min(seconds, 10.0))


def _transport_error(exc: httpx.HTTPError, url: str, *, in_stream: bool = False) -> TIRError:
    """Map an httpx failure to our error, without quoting anything but the URL.

    `in_stream`: the failure came while reading a streamed body, after its headers.
    """
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"timed out talking to {url}: {type(exc).__name__}")
    if in_stream and isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return StreamInterruptedError(f"the stream from {url} broke off: {exc}")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return APIConnectionError(f"the connection to {url} failed: {exc}")
    return APIConnectionError(f"could not connect to {url}: {exc}")


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
            if self.secret and self.secret in e.message:
                e.message = e.message.replace(self.secret, "**********")
                e.args = (e.message,)
            raise
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.model:
            self.model = chunk.model
        return chunk

    def check_end(self, url: str) -> None:
        """Raise if the body ended before the reply did (a truncated stream is an error)."""
        if self.finish_reason is None:
            if not self.events:
                raise StreamInterruptedError(
                    f"{url} answered with an empty stream (no event at all): there is no answer. "
                    "Some servers (llama.cpp's) do this when the prompt does not fit the context.",
                    request_id=self.request_id,
                )
            how = "sent [DONE]" if self.done else "closed the stream"
            raise StreamInterruptedError(
                f"{url} {how} before the reply finished (no finish_reason): the answer is "
                "incomplete",
                request_id=self.request_id,
            )


def _request_id(headers: httpx.Headers) -> str | None:
    value: str | None = headers.get("x-request-id") or headers.get("request-id")
    return value


class TIRClient:
    """Sends chat requests for one configuration, sync or async, with retries and pooling.

    httpx clients are created on first use: one sync client per process, one async client
    per event loop (so the object works across `asyncio.run` calls and in threads that run
    their own loops). Pickling and `os.fork` give a copy that makes its own clients.
    """

    def __init__(
        self,
        config: TIRConfig,
        *,
        retry: RetryPolicy | None = None,
        tool_mode: ToolMode = "auto",
    ) -> None:
        """Create a client; no I/O happens here.

        Args:
            config: where and how to connect.
            retry: the retry policy (default: `config.max_retries` with backoff).
            tool_mode: how tools are sent. `"auto"` sends them natively and, if the endpoint
                rejects them (vLLM without tool parsing), in the prompt, remembering that for
                the endpoint; `"native"` and `"prompt"` force one way.
        """
        if tool_mode not in ("auto", "native", "prompt"):
            raise ValueError(f"tool_mode must be 'auto', 'native' or 'prompt', got {tool_mode!r}")
        self.config = config
        self.retry = retry or RetryPolicy(max_retries=config.max_retries)
        self.tool_mode: ToolMode = tool_mode
        self._init_pools()

    def _init_pools(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._sync: httpx.Client | None = None
        # Config is immutable: URLs and headers are worked out once, not per request.
        self._urls: dict[str | None, str] = {}
        self._headers: tuple[dict[str, str], dict[str, str]] | None = None
        self._finalizer: weakref.finalize[[], TIRClient] | None = None
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "retry": self.retry, "tool_mode": self.tool_mode}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.config = state["config"]
        self.retry = state["retry"]
        self.tool_mode = state.get("tool_mode", "auto")
        self._init_pools()

    def __repr__(self) -> str:
        return f"TIRClient({self.config!r})"

    # -- pools ------------------------------------------------------------------------------

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            # The parent's sockets (and TLS state) must not be touched: drop, never close.
            if self._finalizer is not None:
                self._finalizer.detach()
            self._init_pools()

    def _sync_client(self) -> httpx.Client:
        self._check_fork()
        client = self._sync
        if client is None:
            with self._lock:
                client = self._sync
                if client is None:
                    client = self._sync = httpx.Client(
                        timeout=_timeout(self.config.timeout), limits=_LIMITS
                    )
                    # Users rarely close a chat model: close its sockets when it is collected.
                    self._finalizer = weakref.finalize(self, client.close)
        return client

    async def _async_client(self) -> httpx.AsyncClient:
        self._check_fork()
        loop = asyncio.get_running_loop()
        entry = self._async.get(loop)
        if entry is not None:
            return entry[0]
        client = httpx.AsyncClient(timeout=_timeout(self.config.timeout), limits=_LIMITS)
        guard = _close_on_loop_shutdown(client)
        # Started in this loop, the guard is one of the loop's async generators: asyncio.run
        # (loop.shutdown_asyncgens) closes it while the loop still runs, closing the client.
        await guard.asend(None)
        self._async[loop] = (client, guard)
        return client

    def close(self) -> None:
        """Close the sync pool. Async pools close with `aclose()` or when their loop ends."""
        with self._lock:
            client, self._sync = self._sync, None
            finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer.detach()
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the pool of the running event loop, and the sync pool."""
        entry = self._async.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[1].aclose()
        self.close()

    def __enter__(self) -> TIRClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> TIRClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- shared pure steps ----------------------------------------------------------------

    def _url(self, payload: Mapping[str, Any]) -> str:
        model = payload.get("model")
        key = model if isinstance(model, str) else None
        url = self._urls.get(key)
        if url is None:
            url = self._urls[key] = self.config.chat_url(key)
        return url

    def _prepare(self, payload: Mapping[str, Any]) -> tuple[str, dict[str, str], bytes]:
        url = self._url(payload)
        if self._headers is None:
            plain = self.config.headers()
            plain["Content-Type"] = "application/json"
            self._headers = (plain, {**plain, "Accept": "text/event-stream"})
        headers = self._headers[1] if payload.get("stream") else self._headers[0]
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return url, headers, body

    def _status_error(self, response: httpx.Response) -> TIRError:
        error = error_from_response(
            response.status_code,
            response.content,
            response.headers,
            secret=self.config.secret(),
            url=str(response.request.url),
        )
        error.retry_after = parse_retry_after(response.headers)
        return error

    def _completion(self, response: httpx.Response) -> ChatCompletion:
        try:
            data = json.loads(response.content)
        except ValueError as e:
            text = response.content[:200].decode("utf-8", "replace")
            raise InvalidResponseError(
                f"the server's reply is not JSON: {text!r}",
                request_id=_request_id(response.headers),
            ) from e
        try:
            completion = parse_completion(data)
        except TIRError as e:
            # The request id is looked up only when there is an error to attach it to.
            e.request_id = _request_id(response.headers)
            raise
        record_usage(completion.model or self.config.model, completion.usage)
        return completion

    def _backoff(self, error: TIRError, attempt: int, url: str) -> float:
        delay = self.retry.delay(error, attempt)
        if delay is None:
            raise error
        logger.info(
            "retrying %s in %.2fs (retry %d of %d) after: %s",
            url,
            delay,
            attempt + 1,
            self.retry.max_retries,
            error,
        )
        return delay

    def _finish_stream(self, state: _StreamState, url: str) -> None:
        state.check_end(url)
        record_usage(state.model or self.config.model, state.usage)

    # -- sync -------------------------------------------------------------------------------

    def _create_once(self, payload: Mapping[str, Any]) -> ChatCompletion:
        url, headers, body = self._prepare(payload)
        client = self._sync_client()
        attempt = 0
        while True:
            try:
                response = client.post(url, content=body, headers=headers)
            except httpx.HTTPError as e:
                error = _transport_error(e, url)
                error.__cause__ = e
            else:
                if response.status_code < 400:
                    return self._completion(response)
                error = self._status_error(response)
            time.sleep(self._backoff(error, attempt, url))
            attempt += 1

    def _stream_once(self, payload: Mapping[str, Any]) -> Generator[ChatChunk, None, None]:
        url, headers, body = self._prepare(payload)
        client = self._sync_client()
        attempt = 0
        while True:
            started = reading = False
            try:
                with client.stream("POST", url, content=body, headers=headers) as response:
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
                        self._finish_stream(state, url)
                        return
            except httpx.HTTPError as e:
                error = _transport_error(e, url, in_stream=reading)
                error.__cause__ = e
            except TIRError as e:
                error = e
            if started:
                raise error
            time.sleep(self._backoff(error, attempt, url))
            attempt += 1

    # -- async ------------------------------------------------------------------------------

    async def _acreate_once(self, payload: Mapping[str, Any]) -> ChatCompletion:
        url, headers, body = self._prepare(payload)
        client = await self._async_client()
        attempt = 0
        while True:
            try:
                response = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError as e:
                error = _transport_error(e, url)
                error.__cause__ = e
            else:
                if response.status_code < 400:
                    return self._completion(response)
                error = self._status_error(response)
            await asyncio.sleep(self._backoff(error, attempt, url))
            attempt += 1

    async def _astream_once(self, payload: Mapping[str, Any]) -> AsyncGenerator[ChatChunk, None]:
        url, headers, body = self._prepare(payload)
        client = await self._async_client()
        attempt = 0
        while True:
            started = reading = False
            try:
                async with client.stream("POST", url, content=body, headers=headers) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        error = self._status_error(response)
                    else:
                        reading = True
                        state = _StreamState(_request_id(response.headers), self.config.secret())
                        decoder = SSEDecoder()
                        async for raw in response.aiter_bytes():
                            for event in decoder.feed(raw):
                                chunk = state.on_event(event)
                                if chunk is not None:
                                    started = True
                                    yield chunk
                        decoder.flush()
                        self._finish_stream(state, url)
                        return
            except httpx.HTTPError as e:
                error = _transport_error(e, url, in_stream=reading)
                error.__cause__ = e
            except TIRError as e:
                error = e
            if started:
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
            started = False
            watch = negotiation.stream_filter()
            try:
                stream = self._astream_once(body)
                try:
                    async for chunk in stream:
                        out = watch.process(chunk) if watch else chunk
                        if out is not None:
                            started = True
                            yield out
                finally:
                    await stream.aclose()
                return
            except TIRError as e:
                if started:
                    raise
                body = negotiation.on_error(e)


ClientCache = tuple[tuple[Any, ...], TIRClient]


def client_for(owner: Any, cached: ClientCache | None) -> ClientCache:
    """The client for an adapter's current settings, reusing `cached` while they are unchanged.

    `owner` carries the fields of `CONFIG_FIELDS` and `tool_mode`. Built from the fields as
    they are now, so that a changed field or a `model_copy(update=...)` takes effect instead
    of silently using the old settings; the adapter keeps the returned pair.
    """
    key = (*(getattr(owner, name) for name in CONFIG_FIELDS), owner.tool_mode)
    if cached is not None and cached[0] == key:
        return cached
    config = TIRConfig(**dict(zip(CONFIG_FIELDS, key, strict=False)))
    return key, TIRClient(config, tool_mode=owner.tool_mode)


async def _close_on_loop_shutdown(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    try:
        yield
        yield  # never reached: the generator waits here until the loop shuts it down
    finally:
        await client.aclose()
