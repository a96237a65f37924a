"""The one HTTP layer every API shares: pools, auth headers, retries, error mapping.

Each API (chat, embeddings, rerank) is a subclass that builds its payloads and reads its
replies in its own module; this class knows nothing of any of them. `GET /models` (what
`tir-llama doctor` reads) goes through the same loop, by `HTTPClient.get`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import logging
import os
import re
import ssl
import threading
import time
import weakref
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, ClassVar, Generic, Protocol, Self, TypedDict, TypeVar

import httpx

from ._config import TIRConfig, _is_loopback, env_first
from ._errors import (
    HIDDEN,
    APIConnectionError,
    APITimeoutError,
    ConfigurationError,
    InvalidResponseError,
    RateLimitError,
    StreamInterruptedError,
    TIRError,
    error_from_response,
    key_hider,
    quote,
    request_id_of,
    scrub_bytes,
    scrub_secret,
)
from ._limits import Limits, _AsyncSlot
from ._retry import RetryPolicy, parse_retry_after
from ._usage import PendingRequest, Usage, record_usage, request_started

__all__ = [
    "AsyncStream",
    "HTTPClient",
    "HTTPOptions",
    "ParserFactory",
    "Plan",
    "StreamParser",
    "adrive",
    "ain_flight",
    "check_batching",
    "drive",
    "in_flight",
    "proxy_for",
]

logger = logging.getLogger("tir_transport")

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)
_R = TypeVar("_R")

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


def _transport_error(
    exc: httpx.HTTPError,
    url: str,
    *,
    in_stream: bool = False,
    secret: str | None = None,
    proxy: str | None = None,
) -> TIRError:
    """Map an httpx failure to our error, chained to it, quoting nothing but the URL.

    `in_stream`: the failure came while reading a streamed body, after its headers.
    `proxy`: the proxy the request went through (named: a failure may be the proxy's).
    """
    where = f"{url} through the proxy {proxy}" if proxy else url
    detail = scrub_secret(str(exc), secret)
    error: TIRError
    if isinstance(exc, httpx.TimeoutException):
        error = APITimeoutError(f"timed out talking to {where}: {type(exc).__name__}")
    elif in_stream and isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        error = StreamInterruptedError(f"the stream from {where} broke off: {detail}")
    elif isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        error = APIConnectionError(f"the connection to {where} failed: {detail}")
    else:
        error = APIConnectionError(f"could not connect to {where}: {detail}")
    # httpx's own message held the key (a header it could not send): not chained, so that
    # no traceback or error reporter finds it there.
    error.__cause__ = exc if detail == str(exc) else None
    error.__suppress_context__ = True
    return error


# Failures after the request went out: the server may have taken it (and may bill it).
_AFTER_SENDING = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


def _proxy_name(proxy: str) -> str:
    """A proxy URL as errors show it: without the user and password it may carry."""
    parts = httpx.URL(proxy)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.host}{port}"


def proxy_for(url: str) -> str | None:
    """The proxy httpx sends a request for `url` through, from the environment, or None.

    `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (any case), read as httpx reads
    them for a client it builds (ours are), with its own helpers, so the answer is its.
    """
    try:
        from httpx._utils import URLPattern, get_environment_proxies
    except ImportError:  # pragma: no cover - a future httpx; the proxy is then not named
        return None
    target = httpx.URL(url)
    # httpx sorts its mounts (the most specific pattern first) and takes the first match.
    mounts = sorted((URLPattern(k), v) for k, v in get_environment_proxies().items())
    return next((proxy for pattern, proxy in mounts if pattern.matches(target)), None)


# The keys of every client made in this process, hidden in httpx's and httpcore's own log
# records: at DEBUG, httpcore logs each reply's headers, and a gateway may echo the
# Authorization value in one. The filter runs only for records a logger lets through.
_KEYS_IN_USE: dict[str, int] = {}  # key -> clients holding it (a key leaves with its last)
# Re-entrant: the collector may run inside a block that holds the lock (any allocation can
# start it), and a finalizer it runs may log (an httpx client closing its pool logs at
# DEBUG), which comes back here through the filter on the same thread. With a plain Lock
# that deadlocked a test run. A re-entered holder (`_keys_busy`) changes nothing.
_KEYS_LOCK = threading.RLock()
_keys_busy = False
_keys_pattern: re.Pattern[str] | None = None  # every form of every key in use, or None
# Keys whose client was collected: the collector only appends here, and the lock's
# holders drain it.
_released: deque[str] = deque()


def _hold_key(client: HTTPClient) -> None:
    """Hide `client`'s key in httpx's and httpcore's log records while the client lives."""
    global _keys_pattern
    key = client.config.api_key.get_secret_value() if client.config.api_key else ""
    if not key_hider(key).forms:
        return  # no key, or one too short to be one
    with _keys_held():
        _KEYS_IN_USE[key] = _KEYS_IN_USE.get(key, 0) + 1
        _keys_pattern = None
    weakref.finalize(client, _released.append, key)


@contextlib.contextmanager
def _keys_held() -> Iterator[bool]:
    """Hold the keys' lock; yields whether this thread already held it.

    The outermost holder first drains the keys of collected clients; a re-entered one
    (`_keys_busy`) does not, so that the block it interrupted finds the state it left.
    """
    global _keys_busy
    with _KEYS_LOCK:
        busy, _keys_busy = _keys_busy, True
        try:
            if not busy:
                _drain_released()
            yield busy
        finally:
            _keys_busy = busy


def _drain_released() -> None:
    global _keys_pattern
    while _released:
        key = _released.popleft()
        left = _KEYS_IN_USE.get(key, 0) - 1
        if left > 0:
            _KEYS_IN_USE[key] = left
        else:
            _KEYS_IN_USE.pop(key, None)
        _keys_pattern = None


def keys_in_use() -> frozenset[str]:
    """The keys whose log records are hidden now (those of the clients alive)."""
    with _keys_held():
        return frozenset(_KEYS_IN_USE)


def _compile(keys: list[str]) -> re.Pattern[str] | None:
    forms = {form for key in keys for form in key_hider(key).forms}
    # Longest first: a form inside a longer one must not leave the rest of it.
    ordered = sorted(forms, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


def _pattern() -> re.Pattern[str] | None:
    global _keys_pattern
    with _keys_held() as reentered:
        if reentered:
            # A finalizer that logs, run by the collector inside a holder's block: the keys
            # as they are, read, not changed.
            return _keys_pattern or _compile(list(_KEYS_IN_USE))
        if _keys_pattern is None and _KEYS_IN_USE:
            _keys_pattern = _compile(list(_KEYS_IN_USE))
        return _keys_pattern


class _HideKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        pattern = _pattern() if _KEYS_IN_USE else None
        if pattern is not None:
            text = record.getMessage()
            shown = pattern.sub(HIDDEN, text)
            if shown != text:
                record.msg, record.args = shown, None
        return True


_HIDE_KEYS = _HideKeys()
for _name in (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
):
    logging.getLogger(_name).addFilter(_HIDE_KEYS)


class HTTPOptions(TypedDict, total=False):
    """What every API client takes beside its config (see `HTTPClient.__init__`)."""

    retry: RetryPolicy | None
    limits: Limits | None
    http_client: httpx.Client | None
    http_async_client: httpx.AsyncClient | None


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
        _hold_key(self)
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
        self._proxy: str | None = None  # the environment's, read once (`_check_proxy`)
        self._proxy_read = False
        self._headers: tuple[dict[str, str], dict[str, str]] | None = None
        self._finalizer: weakref.finalize[[], HTTPClient] | None = None
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    # The environment variables naming this API's model, first found (none: TIRConfig's).
    model_env_vars: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_env(cls, *, model: str | None = None, **options: Any) -> Self:
        """Build from arguments and the environment; the model from `model_env_vars`.

        `options` are `TIRConfig.from_env`'s arguments and this class's keyword arguments.
        A missing model is reported at the first request, with every other missing setting.
        """
        own = inspect.signature(cls.__init__).parameters.keys() | HTTPOptions.__annotations__
        fields = {k: options.pop(k) for k in list(options) if k in own and k != "config"}
        if cls.model_env_vars:
            model = model or env_first(cls.model_env_vars) or ""
            return cls(TIRConfig.from_env(**options).replace(model=model), **fields)
        return cls(TIRConfig.from_env(model=model, **options), **fields)

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
        _hold_key(self)
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
                        timeout=self._timeout,
                        limits=_LIMITS,
                        verify=_ssl_context(),
                        proxy=self._pool_proxy(),
                        trust_env=False,
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
        self._forget_closed_loops()
        client = httpx.AsyncClient(
            timeout=self._timeout,
            limits=_LIMITS,
            verify=_ssl_context(),
            proxy=self._pool_proxy(),
            trust_env=False,
        )
        guard = _close_on_loop_shutdown(client)
        # Started in this loop, the guard is one of the loop's async generators: asyncio.run
        # (loop.shutdown_asyncgens) closes it while the loop still runs, closing the client.
        await guard.asend(None)
        with self._lock:  # threads with loops of their own add theirs while this one sweeps
            self._async[loop] = (client, guard)
        return client

    def _forget_closed_loops(self) -> None:
        # A loop closed by hand (`loop.close()` without `shutdown_asyncgens`, as asyncio.run
        # does) never closed its pool: the pool's sockets hold the loop, so the weak key never
        # dies. Dropped here, the pool and its loop are garbage and their sockets close; at
        # most one closed loop's pool waits for the next new loop.
        with self._lock:
            for loop in [loop for loop in self._async if loop.is_closed()]:
                self._async.pop(loop, None)

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
        with self._lock:
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
            url = self.config.url(api, model)
            self._check_proxy(url)
            self._urls[key] = url
        return url

    @property
    def _proxy_shown(self) -> str | None:
        """The proxy our requests go through, as errors name it (every URL: one host)."""
        return _proxy_name(self._proxy) if self._proxy else None

    def _pool_proxy(self) -> str | None:
        """The proxy our pools use: the one `_check_proxy` read (and checked), never another."""
        if not self._proxy_read:
            self._api_url("models", None)  # any API: one host; reads and checks the proxy
        return self._proxy

    def _check_proxy(self, url: str) -> None:
        """Name the proxy a URL goes through; refuse one that would carry the key in clear.

        Plain http is allowed to loopback only (or by `allow_insecure_http`): a proxy from the
        environment could take such a request, key and all, to another host in clear text.
        """
        if self.http_client is not None and self.http_async_client is not None:
            return  # the user's own clients only: their proxies, as they configured them
        if not self._proxy_read:
            # Read once (every URL of a client is on one host), and every pool of ours is
            # built with it: the proxy checked here is the one used, whatever the
            # environment says when a later event loop makes its pool.
            self._proxy, self._proxy_read = proxy_for(url), True
        proxy = self._proxy
        if proxy is None:
            return
        name = _proxy_name(proxy)
        target, via = httpx.URL(url), httpx.URL(proxy)
        clear = target.scheme == "http" and via.scheme == "http"
        if clear and not _is_loopback(via.host) and not self.config.allow_insecure_http:
            raise ConfigurationError(
                f"Refusing plain http:// to {target.host} through the proxy {name} (from "
                "HTTP_PROXY/ALL_PROXY): the API key would travel to the proxy in clear text. "
                f"Add {target.host} to NO_PROXY (a local server needs no proxy), use https://, "
                "or pass allow_insecure_http=True if you really mean it."
            )

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
        proxy = self._proxy_shown
        if proxy and response.status_code in (407, 502, 503, 504):
            # The answer may be the proxy's own (it could not reach TIR, or wants a login).
            error.message += f" (the request went through the proxy {proxy})"
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

    def _failure(self, exc: httpx.HTTPError, url: str, in_stream: bool = False) -> TIRError:
        return _transport_error(
            exc,
            url,
            in_stream=in_stream,
            secret=self.config.secret(),
            proxy=self._proxy_shown,
        )

    def _read(self, response: httpx.Response, parse: Callable[[Any], _R], model: str | None) -> _R:
        """The one reader of a whole reply, for every API: JSON in, `parse`'s reply out.

        The key is hidden in the raw reply before anything decodes, quotes or cuts it (a
        gateway may echo the Authorization header); a failure carries the request id; the
        request and its usage are counted (`model`: the request's, None for a request that
        is no model's work, such as `GET /models`).
        """
        secret = self.config.secret()
        content = scrub_bytes(response.content, secret)
        try:
            try:
                data = json.loads(content)
            except ValueError as e:
                text = content.decode("utf-8", "replace")
                raise InvalidResponseError(
                    f"the server's reply is not JSON: {quote(text, 200)!r}"
                ) from e
            reply = parse(data)
        except TIRError as e:
            e.request_id = request_id_of(response.headers, secret)
            if model is not None:
                record_usage(model, None)  # taken and answered, but its usage is unreadable
            raise
        if model is not None:
            usage: Usage | None = getattr(reply, "usage", None)
            record_usage(model, usage, served=getattr(reply, "model", None))
        return reply

    # -- the request loop: send, retry, back off, map errors, respect limits -----------------
    # A reply read whole is retried until its headers arrive; a stream also while it has
    # handed nothing on (after that a retry would repeat what the caller has seen). The APIs
    # (chat, embeddings, rerank) build bodies and read replies; they never loop themselves.

    def get(self, api: str) -> Any:
        """`GET {base}/{api}` (`"models"`, say) with retries: its JSON, read as every reply is.

        Raises:
            TIRError: a subclass for each kind of failure, after the retries the policy allows.
        """
        url = self._api_url(api, None)
        return self._read(self._request(url, None), _as_is, None)

    def _request(self, url: str, body: bytes | None, model: str | None = None) -> httpx.Response:
        """POST (GET without a body) with retries; the response, or the last try's error.

        `model`: a try that failed after it was sent (a timeout waiting for the reply) is
        counted as its request, without usage (see `track_usage`).
        """
        headers = self._request_headers()
        client = self._sync_client()
        method = "GET" if body is None else "POST"
        attempt = 0
        while True:
            try:
                with self._slot():
                    response = client.request(
                        method, url, content=body, headers=headers, timeout=self._timeout
                    )
            except httpx.HTTPError as e:
                if model is not None and isinstance(e, _AFTER_SENDING):
                    record_usage(model, None)
                error = self._failure(e, url)
            else:
                if response.status_code < 400:
                    return response
                error = self._status_error(response)
            time.sleep(self._backoff(error, attempt, url))
            attempt += 1

    async def _arequest(
        self, url: str, body: bytes | None, model: str | None = None
    ) -> httpx.Response:
        """Async twin of `_request`."""
        headers = self._request_headers()
        client = await self._async_client()
        method = "GET" if body is None else "POST"
        attempt = 0
        while True:
            try:
                async with self._aslot():
                    try:
                        response = await client.request(
                            method, url, content=body, headers=headers, timeout=self._timeout
                        )
                    except asyncio.CancelledError:
                        # Cancelled while out (`wait_for`, a task cancelled): the server may
                        # have taken it; which, the client cannot tell.
                        if model is not None:
                            record_usage(model, None)
                        raise
            except httpx.HTTPError as e:
                if model is not None and isinstance(e, _AFTER_SENDING):
                    record_usage(model, None)
                error = self._failure(e, url)
            else:
                if response.status_code < 400:
                    return response
                error = self._status_error(response)
            await asyncio.sleep(self._backoff(error, attempt, url))
            attempt += 1

    def _stream(
        self, url: str, body: bytes, parser: ParserFactory[_T], model: str
    ) -> Generator[_T, None, None]:
        """POST for a streamed reply and yield what `parser` reads from its bytes.

        Retried while nothing has been yielded. The response and the slot are given back on
        every exit: the end, an error, `close()` (a caller's `break`), garbage collection.
        Each try the server took counts as a request of `model` (see `track_usage`), with
        the usage the stream carried, if it got that far.
        """
        headers = self._request_headers(stream=True)
        client = self._sync_client()
        attempt = 0
        while True:
            handed_on = reading = False
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
                        parse = parser(response)
                        pending = request_started(model)
                        try:
                            for raw in response.iter_bytes():
                                for item in parse.feed(raw):
                                    handed_on = True
                                    yield item
                            parse.end()
                            return
                        finally:
                            pending.finish(parse.model, parse.usage)
            except httpx.HTTPError as e:
                if not reading and isinstance(e, _AFTER_SENDING):
                    record_usage(model, None)
                error = self._failure(e, url, in_stream=reading)
            except TIRError as e:  # the parser's: an error event, a truncated stream
                error = e
            if handed_on:
                raise error
            time.sleep(self._backoff(error, attempt, url))
            attempt += 1

    def _astream(
        self, url: str, body: bytes, parser: ParserFactory[_T], model: str
    ) -> AsyncStream[_T]:
        """Async twin of `_stream`."""
        return AsyncStream(self, url, body, parser, model)


_C = TypeVar("_C", bound=HTTPClient)


def _as_is(data: Any) -> Any:
    return data


_Request = TypeVar("_Request")
_Reply = TypeVar("_Reply")
_Result = TypeVar("_Result")
_Job = TypeVar("_Job")

# A sans-IO plan of requests (a fallback, a search): yields each request, is sent its reply or
# its error, returns the result. `drive` and `adrive` run one; the API modules write none.
Plan = Generator[_Request, _Reply | TIRError, _Result]


def drive(plan: Plan[_Request, _Reply, _Result], send: Callable[[_Request], _Reply]) -> _Result:
    """Run `plan`, sending each of its requests with `send` (which raises `TIRError`)."""
    request = next(plan)
    while True:
        outcome: _Reply | TIRError
        try:
            outcome = send(request)
        except TIRError as e:
            outcome = e
        try:
            request = plan.send(outcome)
        except StopIteration as done:
            result: _Result = done.value
            return result


async def adrive(
    plan: Plan[_Request, _Reply, _Result], send: Callable[[_Request], Awaitable[_Reply]]
) -> _Result:
    """Async twin of `drive`."""
    request = next(plan)
    while True:
        outcome: _Reply | TIRError
        try:
            outcome = await send(request)
        except TIRError as e:
            outcome = e
        try:
            request = plan.send(outcome)
        except StopIteration as done:
            result: _Result = done.value
            return result


def check_batching(batch_size: int, max_concurrency: int) -> None:
    """Refuse a batch size or a concurrency below 1 (for the API clients that batch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency!r}")


def in_flight(
    send: Callable[[_Job], _Result], jobs: Sequence[_Job], limit: int, name: str
) -> list[_Result]:
    """`send(job)` for every job, up to `limit` at a time on threads; results in job order.

    Each runs in a copy of the caller's context, so `track_usage()` sees it. The first
    failure is raised at once, as it is: jobs not started are never started, and running
    ones are left to end on their own (a request cannot be taken back), never waited for,
    not even by the interpreter at exit (the threads are daemons).
    """
    if len(jobs) <= 1 or limit == 1:
        return [send(job) for job in jobs]
    contexts = [contextvars.copy_context() for _ in jobs]  # copied here, in the caller's
    results: list[Any] = [None] * len(jobs)
    queue = iter(range(len(jobs)))
    lock = threading.Lock()
    over = threading.Event()  # every job done, or one failed, or the caller left
    failures: list[BaseException] = []
    left = [len(jobs)]

    def work() -> None:
        while not over.is_set():
            with lock:
                index = next(queue, None)
            if index is None:
                return
            try:
                results[index] = contexts[index].run(send, jobs[index])
            except BaseException as e:
                failures.append(e)
                over.set()
                return
            with lock:
                left[0] -= 1
                if not left[0]:
                    over.set()

    for number in range(min(limit, len(jobs))):
        threading.Thread(target=work, name=f"{name}-{number}", daemon=True).start()
    try:
        over.wait()
    finally:
        over.set()  # a caller interrupted (Ctrl-C) starts no more jobs either
    if failures:
        raise failures[0]
    return results


async def ain_flight(
    send: Callable[[_Job], Awaitable[_Result]], jobs: Sequence[_Job], limit: int
) -> list[_Result]:
    """Async twin of `in_flight`: the first failure cancels the others and is raised."""
    if len(jobs) <= 1:
        return [await send(job) for job in jobs]
    slots = asyncio.Semaphore(limit)

    async def one(job: _Job) -> _Result:
        async with slots:
            return await send(job)

    tasks = [asyncio.ensure_future(one(job)) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class StreamParser(Protocol[_T_co]):
    """Reads one streamed reply: made per attempt from its response (`ParserFactory`).

    `model` and `usage` are what the reply said so far (the HTTP layer counts them when the
    attempt ends, however it ends).
    """

    model: str | None
    usage: Usage | None

    def feed(self, raw: bytes) -> Iterable[_T_co]:
        """The items these bytes complete; may raise `TIRError` part way (an error event)."""
        ...

    def end(self) -> None:
        """The body ended: raise `TIRError` if the reply had not (a truncated stream)."""
        ...


ParserFactory = Callable[[httpx.Response], StreamParser[_T]]


class AsyncStream(Generic[_T]):
    """The items of one streamed POST (`HTTPClient._astream`): an async iterator.

    Retried while nothing has been handed on, as `HTTPClient._stream` is. A class rather than
    an async generator, on purpose: when an event loop ends, asyncio closes every async
    generator still open, all at once, and a generator that closes another one in its own
    cleanup races that close ("aclose(): asynchronous generator is already running", logged
    at shutdown for every stream a caller left with `break`). Nobody but its owner closes
    this object, so an adapter's generator may close it in `finally`.
    """

    def __init__(
        self, client: HTTPClient, url: str, body: bytes, parser: ParserFactory[_T], model: str
    ) -> None:
        self._client = client
        self._url = url
        self._body = body
        self._parser = parser
        self._model = model
        self._pending: PendingRequest | None = None
        self._ready: deque[_T] = deque()
        self._handed_on = False  # an item was read: no retry from here
        self._finished = False
        self._error: TIRError | None = None  # raised once the items before it are read
        self._attempt = 0
        self._slot: AbstractAsyncContextManager[None] | None = None
        self._response: httpx.Response | None = None
        self._bytes: AsyncIterator[bytes] | None = None
        self._parse: StreamParser[_T] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __aiter__(self) -> AsyncStream[_T]:
        return self

    async def __anext__(self) -> _T:
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

    def __del__(self) -> None:
        # Left without aclose() (a `break`): the slot goes back now, so later requests of the
        # client do not wait for it forever, and the response is closed on its loop.
        # getattr: __init__ may have failed before these were set.
        slot, self._slot = getattr(self, "_slot", None), None
        response, self._response = getattr(self, "_response", None), None
        self._settle()
        loop = getattr(self, "_loop", None)
        if loop is None or loop.is_closed():
            if isinstance(slot, _AsyncSlot):
                slot.release()  # no loop to wake: nobody waits on it any more
            return
        try:
            # The collector may run on another thread: an asyncio semaphore and a response
            # belong to their loop, so both go back through it.
            if isinstance(slot, _AsyncSlot):
                loop.call_soon_threadsafe(slot.release)
            if response is not None:
                loop.call_soon_threadsafe(_close_later, loop, response)
        except RuntimeError:  # the loop closed meanwhile
            if isinstance(slot, _AsyncSlot):
                slot.release()

    async def _advance(self) -> None:
        if self._bytes is None:
            await self._open()
            return
        assert self._parse is not None
        try:
            raw = await anext(self._bytes)
        except StopAsyncIteration:
            try:
                self._parse.end()
            except TIRError as e:
                await self._failed(e)
                return
            self._finished = True
            await self._release()
            return
        except httpx.HTTPError as e:
            await self._failed(self._client._failure(e, self._url, in_stream=True))
            return
        try:
            self._ready.extend(self._parse.feed(raw))
        except TIRError as e:  # an error event, or a chunk that cannot be read
            await self._failed(e)

    async def _open(self) -> None:
        client = self._client
        # First, as in `_arequest`: a missing key fails before a pool is made for it.
        headers = client._request_headers(stream=True)
        http = await client._async_client()
        self._loop = asyncio.get_running_loop()
        request = http.build_request(
            "POST", self._url, content=self._body, headers=headers, timeout=client._timeout
        )
        self._slot = client._aslot()
        await self._slot.__aenter__()
        try:
            response = await http.send(request, stream=True)
        except asyncio.CancelledError:
            record_usage(self._model, None)  # as `_arequest`: it may have been taken
            raise
        except httpx.HTTPError as e:
            if isinstance(e, _AFTER_SENDING):
                record_usage(self._model, None)
            await self._failed(client._failure(e, self._url))
            return
        self._response = response
        if response.status_code >= 400:
            try:
                await response.aread()
            except httpx.HTTPError as e:  # the error body broke off: as the sync loop does
                await self._failed(client._failure(e, self._url))
                return
            await self._failed(client._status_error(response))
            return
        self._pending = request_started(self._model)
        self._parse = self._parser(response)
        self._bytes = response.aiter_bytes()

    async def _failed(self, error: TIRError) -> None:
        """Retry, or raise `error` once the items before it are read."""
        await self._release()
        if not self._handed_on and not self._ready:
            delay = self._client.retry.delay(error, self._attempt)
            if delay is not None:
                self._client._log_retry(self._url, delay, self._attempt, error)
                await asyncio.sleep(delay)
                self._attempt += 1
                return
        self._error, self._finished = error, True

    def _settle(self) -> None:
        """Count the attempt's usage (what its stream carried) once, however it ended."""
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is not None:
            parse = self._parse
            pending.finish(parse.model if parse else None, parse.usage if parse else None)

    async def _release(self) -> None:
        self._settle()
        self._bytes, self._parse = None, None
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


async def _close_on_loop_shutdown(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    try:
        yield
        yield  # never reached: the generator waits here until the loop shuts it down
    finally:
        await client.aclose()
