"""The one HTTP layer every API shares: pools, auth headers, retries, error mapping.

Each API (chat, embeddings) is a subclass that builds its payloads and reads its replies in
its own module; this class knows nothing of either.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import ssl
import threading
import time
import weakref
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, TypeVar

import httpx

from ._config import TIRConfig
from ._errors import (
    APIConnectionError,
    APITimeoutError,
    InvalidResponseError,
    RateLimitError,
    StreamInterruptedError,
    TIRError,
    error_from_response,
    quote,
    request_id_of,
)
from ._limits import Limits
from ._retry import RetryPolicy, parse_retry_after

__all__ = ["HTTPClient"]

logger = logging.getLogger("tir_transport")

# Reusable, sync and async: what a request holds when no limit applies.
_NO_LIMIT = contextlib.nullcontext()

_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=30)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process, shared by every pool.

    Building one (loading the CA bundle) costs about 20 ms, and a new async pool is made for
    every event loop (each `asyncio.run`).
    """
    return httpx.create_ssl_context()


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


class HTTPClient:
    """Pooled httpx clients for one configuration, sync and async, with the retry loop.

    httpx clients are created on first use: one sync client per process, one async client
    per event loop (so the object works across `asyncio.run` calls and in threads that run
    their own loops). Pickling and `os.fork` give a copy that makes its own clients.
    """

    def __init__(
        self,
        config: TIRConfig,
        *,
        retry: RetryPolicy | None = None,
        limits: Limits | None = None,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
    ) -> None:
        """Create a client; no I/O happens here.

        Args:
            config: where and how to connect.
            retry: the retry policy (default: `config.max_retries` with backoff).
            limits: requests in flight and per minute (default: none), and the back-off that
                a 429 with `Retry-After` imposes on every request of this client.
            http_client: your own `httpx.Client` (a proxy, a custom CA, mTLS) for sync calls,
                used as given and never closed here; `config.timeout` still applies.
            http_async_client: the same for async calls (an httpx async client belongs to
                the event loop it was first used in).
        """
        self.config = config
        self.retry = retry or RetryPolicy(max_retries=config.max_retries)
        self.limits = limits or Limits()
        self.http_client = http_client
        self.http_async_client = http_async_client
        self._timeout = _timeout(config.timeout)
        self._init_pools()

    def _init_pools(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._sync: httpx.Client | None = None
        # Config is immutable: URLs and headers are worked out once, not per request.
        self._urls: dict[tuple[str, str | None], str] = {}
        self._headers: tuple[dict[str, str], dict[str, str]] | None = None
        self._finalizer: weakref.finalize[[], HTTPClient] | None = None
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict[str, Any]:
        if self.http_client is not None or self.http_async_client is not None:
            # A copy without them would quietly skip the proxy or CA they carry.
            raise TypeError(
                "a client with your own http_client / http_async_client cannot be pickled "
                "(an httpx client cannot): build it where it is used (in the Ray actor, say)"
            )
        # Pools, locks and caches stay behind: the copy makes its own.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._timeout = _timeout(self.config.timeout)
        self._init_pools()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # -- pools ------------------------------------------------------------------------------

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            # The parent's sockets (and TLS state) must not be touched: drop, never close.
            if self._finalizer is not None:
                self._finalizer.detach()
            self._init_pools()

    def _sync_client(self) -> httpx.Client:
        if self.http_client is not None:
            return self.http_client
        self._check_fork()
        client = self._sync
        if client is None:
            with self._lock:
                client = self._sync
                if client is None:
                    client = self._sync = httpx.Client(
                        timeout=_timeout(self.config.timeout),
                        limits=_LIMITS,
                        verify=_ssl_context(),
                    )
                    # Users rarely close a chat model: close its sockets when it is collected.
                    self._finalizer = weakref.finalize(self, client.close)
        return client

    async def _async_client(self) -> httpx.AsyncClient:
        if self.http_async_client is not None:
            return self.http_async_client
        self._check_fork()
        loop = asyncio.get_running_loop()
        entry = self._async.get(loop)
        if entry is not None:
            return entry[0]
        client = httpx.AsyncClient(
            timeout=_timeout(self.config.timeout), limits=_LIMITS, verify=_ssl_context()
        )
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

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self: _C) -> _C:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- shared steps ---------------------------------------------------------------------

    def _api_url(self, api: str, model: str | None) -> str:
        key = (api, model)
        url = self._urls.get(key)
        if url is None:
            url = self._urls[key] = self.config.url(api, model)
        return url

    def _request_headers(self, stream: bool = False) -> dict[str, str]:
        if self._headers is None:
            plain = self.config.headers()
            plain["Content-Type"] = "application/json"
            self._headers = (plain, {**plain, "Accept": "text/event-stream"})
        return self._headers[1] if stream else self._headers[0]

    def _status_error(self, response: httpx.Response) -> TIRError:
        error = error_from_response(
            response.status_code,
            response.content,
            response.headers,
            secret=self.config.secret(),
            url=str(response.request.url),
        )
        error.retry_after = parse_retry_after(response.headers)
        if error.retry_after and isinstance(error, RateLimitError):
            # The server said to wait: the other requests of this client wait too.
            self.limits.backoff.hold(error.retry_after)
        return error

    def _slot(self) -> AbstractContextManager[None]:
        """A request slot when limits apply (or a back-off is on); otherwise nothing to do."""
        return self.limits.slot() if self.limits.active else _NO_LIMIT

    def _aslot(self) -> AbstractAsyncContextManager[None]:
        """Async twin of `_slot`."""
        return self.limits.aslot() if self.limits.active else _NO_LIMIT

    def _backoff(self, error: TIRError, attempt: int, url: str) -> float:
        delay = self.retry.delay(error, attempt)
        if delay is None:
            raise error
        self._log_retry(url, delay, attempt, error)
        return delay

    def _log_retry(self, url: str, delay: float, attempt: int, error: TIRError) -> None:
        logger.info(
            "retrying %s in %.2fs (retry %d of %d) after: %s",
            url,
            delay,
            attempt + 1,
            self.retry.max_retries,
            error,
        )

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return json.loads(response.content)
        except ValueError as e:
            text = response.content[:400].decode("utf-8", "replace")
            raise InvalidResponseError(
                f"the server's reply is not JSON: {quote(text, 200)!r}",
                request_id=request_id_of(response.headers),
            ) from e

    # TODO(issue 18, next step): one request loop. The stream attempt (send with the slot
    # held, status -> error, retry only while nothing was handed on) lives in
    # `_chat.AsyncChatStream` and `_chat.ChatClient._stream_once`; move it here as one sync and
    # one async iterator over raw bytes that chat (and rerank, embeddings) parse, beside these.
    def _post(self, url: str, body: bytes) -> httpx.Response:
        """POST with retries; the successful response, or the error after the last try."""
        headers = self._request_headers()
        client = self._sync_client()
        attempt = 0
        while True:
            try:
                with self._slot():
                    response = client.post(
                        url, content=body, headers=headers, timeout=self._timeout
                    )
            except httpx.HTTPError as e:
                error = _transport_error(e, url)
                error.__cause__ = e
            else:
                if response.status_code < 400:
                    return response
                error = self._status_error(response)
            time.sleep(self._backoff(error, attempt, url))
            attempt += 1

    async def _apost(self, url: str, body: bytes) -> httpx.Response:
        """Async twin of `_post`."""
        headers = self._request_headers()
        client = await self._async_client()
        attempt = 0
        while True:
            try:
                async with self._aslot():
                    response = await client.post(
                        url, content=body, headers=headers, timeout=self._timeout
                    )
            except httpx.HTTPError as e:
                error = _transport_error(e, url)
                error.__cause__ = e
            else:
                if response.status_code < 400:
                    return response
                error = self._status_error(response)
            await asyncio.sleep(self._backoff(error, attempt, url))
            attempt += 1


_C = TypeVar("_C", bound=HTTPClient)


async def _close_on_loop_shutdown(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    try:
        yield
        yield  # never reached: the generator waits here until the loop shuts it down
    finally:
        await client.aclose()
