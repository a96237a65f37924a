"""The one transport every API shares: pools, auth headers, the request loop, error mapping.

A `Transport` sends to the endpoint of one configuration: GET and POST with retries, back-off
and limits, a whole reply read by one reader (`_read`), streams by `stream`/`astream` (the
loops are in `stream`). It knows nothing of any API: the per-API clients (chat, embeddings,
rerank) build bodies and read replies, and never loop themselves.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Generator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx

from .._config import TIRConfig, _is_loopback
from .._errors import (
    ConfigurationError,
    InvalidResponseError,
    RateLimitError,
    TIRError,
    error_from_response,
    quote,
    request_id_of,
)
from .._limits import Limits
from .._retry import RetryPolicy, parse_retry_after
from .._secrets import scrub_bytes
from .._usage import Usage, record_usage
from .._version import __version__
from .asend import aopen, asend
from .failures import AFTER_SENDING, transport_error
from .keys import hold_key
from .pools import Engine, Pools, choose_engine, http_timeout, installed, proxy_for, proxy_name
from .replies import Opened, Reply
from .send import send
from .stream import AsyncStream, ParserFactory, sync_stream

if TYPE_CHECKING:
    from .u3 import U3Pool

__all__ = ["Closing", "Engine", "Transport"]

logger = logging.getLogger("tir_transport")

_T = TypeVar("_T")
_R = TypeVar("_R")

# Reusable, sync and async: what a request holds when no limit applies.
_NO_LIMIT = contextlib.nullcontext()
# What every request says it comes from, whichever engine sends it.
USER_AGENT = f"tir-llama/{__version__}"


class Closing:
    """`with` and `async with` for an object whose `close()` / `aclose()` give its pools back."""

    def close(self) -> None:
        """Close the sync pool."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close the pool of the running event loop, and the sync pool."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Transport(Closing):
    """Sends to one configuration's endpoint, sync or async, with retries, limits and pools.

    One sync pool per process, one async pool per event loop (see `Pools`), so a transport
    works across `asyncio.run` calls and threads. Pickling and `os.fork` give a copy that makes
    its own pools.
    """

    def __init__(
        self,
        config: TIRConfig,
        *,
        retry: RetryPolicy | None = None,
        limits: Limits | None = None,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
        engine: Engine | None = None,
    ) -> None:
        """Create a transport; no I/O happens here.

        Args:
            config: where and how to connect.
            retry: the retry policy (default: `config.max_retries` with backoff).
            limits: requests in flight and per minute (default: none), and the back-off that
                a 429 with `Retry-After` imposes on every request of this transport.
            http_client: your own `httpx.Client` (a proxy, a custom CA, mTLS) for sync calls,
                used as given and never closed here; `config.timeout` still applies.
            http_async_client: the same for async calls (an httpx async client belongs to
                the event loop it was first used in).
            engine: what our own pools run on. `"auto"` (the default): urllib3 for sync
                calls and aiohttp for async ones, about half of httpx's client CPU a call and
                a tenth of it with many in flight (docs/performance.md); httpx where they
                are not installed. `"httpx"`: httpx for everything. Your own clients and a
                proxy from the environment always run on httpx. Default: the
                `TIR_HTTP_ENGINE` variable, else `"auto"`.
        """
        self.engine = choose_engine(engine)
        self.config = config
        self.retry = retry or RetryPolicy(max_retries=config.max_retries)
        self.limits = limits or Limits()
        self.http_client = http_client
        self.http_async_client = http_async_client
        self._start()

    def _start(self) -> None:
        key = self.config.api_key.get_secret_value() if self.config.api_key else ""
        hold_key(self, key)
        self._timeout = http_timeout(self.config.timeout)
        self._pools = Pools(self, self._timeout, self.http_client, self.http_async_client)
        # Config is immutable: URLs and headers are worked out once, not per request.
        self._urls: dict[tuple[str, str | None], str] = {}
        self._proxy: str | None = None  # the environment's, read once (`_check_proxy`)
        self._proxy_read = False
        self._header_sets: tuple[dict[str, str], dict[str, str]] | None = None
        self._engines: tuple[bool, bool] | None = None  # (sync on urllib3, async on aiohttp)

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
        self._start()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # -- pools ------------------------------------------------------------------------------

    def _sync_client(self) -> httpx.Client:
        return self._pools.sync(self._pool_proxy())

    async def _async_client(self) -> httpx.AsyncClient:
        return await self._pools.async_(self._pool_proxy())

    def _engines_used(self) -> tuple[bool, bool]:
        """Whether sync calls run on urllib3 and async ones on aiohttp (see `engine`)."""
        engines = self._engines
        if engines is None:
            ours = self.engine == "auto" and self._pool_proxy() is None
            engines = self._engines = (
                ours and self.http_client is None and installed("urllib3"),
                ours and self.http_async_client is None and installed("aiohttp"),
            )
        return engines

    def _u3(self) -> U3Pool | None:
        """This process's urllib3 pool when sync calls run on it, else None (httpx)."""
        return self._pools.u3() if self._engines_used()[0] else None

    def _on_aiohttp(self) -> bool:
        """Whether async requests go over our aiohttp pool (see `engine`)."""
        return self._engines_used()[1]

    def close(self) -> None:
        """Close the sync pool. Async pools close with `aclose()` or when their loop ends."""
        self._pools.close()

    async def aclose(self) -> None:
        """Close the pool of the running event loop, and the sync pool."""
        await self._pools.aclose()

    # -- what every request shares ----------------------------------------------------------

    def url(self, api: str, model: str | None) -> str:
        """The URL of `api` (`"chat/completions"`, say) for `model`, its proxy checked.

        `model`: None for the config's (a client sharing the transport passes its own).
        """
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
        return proxy_name(self._proxy) if self._proxy else None

    def _pool_proxy(self) -> str | None:
        """The proxy our pools use: the one `_check_proxy` read (and checked), never another."""
        if not self._proxy_read:
            self.url("models", None)  # any API: one host; reads and checks the proxy
        return self._proxy

    def _check_proxy(self, url: str) -> None:
        """Name the proxy a URL goes through; refuse one that would carry the key in clear.

        Plain http is allowed to loopback only (or by `allow_insecure_http`): a proxy from the
        environment could take such a request, key and all, to another host in clear text.
        """
        if self.http_client is not None and self.http_async_client is not None:
            return  # the user's own clients only: their proxies, as they configured them
        if not self._proxy_read:
            # Read once (every URL of a transport is on one host), and every pool of ours is
            # built with it: the proxy checked here is the one used, whatever the
            # environment says when a later event loop makes its pool.
            self._proxy, self._proxy_read = proxy_for(url), True
        proxy = self._proxy
        if proxy is None:
            return
        name = proxy_name(proxy)
        target, via = httpx.URL(url), httpx.URL(proxy)
        clear = target.scheme == "http" and via.scheme == "http"
        if clear and not _is_loopback(via.host) and not self.config.allow_insecure_http:
            raise ConfigurationError(
                f"Refusing plain http:// to {target.host} through the proxy {name} (from "
                "HTTP_PROXY/ALL_PROXY): the API key would travel to the proxy in clear text. "
                f"Add {target.host} to NO_PROXY (a local server needs no proxy), use https://, "
                "or pass allow_insecure_http=True if you really mean it."
            )

    def _headers(self, stream: bool = False) -> dict[str, str]:
        if self._header_sets is None:
            plain = self.config.headers()
            plain["Content-Type"] = "application/json"
            given = {name.lower() for name in plain}
            if "accept-encoding" not in given:
                # What httpx asks for by itself, asked for on every engine (each decodes it).
                plain["Accept-Encoding"] = "gzip, deflate"
            if "user-agent" not in given:
                # The same on every engine (each would send its own), and the service's logs
                # can tell this library's requests from others'. `default_headers` replaces it.
                plain["User-Agent"] = USER_AGENT
            self._header_sets = (plain, {**plain, "Accept": "text/event-stream"})
        return self._header_sets[1] if stream else self._header_sets[0]

    def _status_error(self, reply: Reply) -> TIRError:
        error = error_from_response(
            reply.status,
            reply.content,
            reply.headers,
            secret=self.config.secret(),
            url=reply.url,
        )
        proxy = self._proxy_shown
        if proxy and reply.status in (407, 502, 503, 504):
            # The answer may be the proxy's own (it could not reach TIR, or wants a login).
            error.message += f" (the request went through the proxy {proxy})"
        error.retry_after = parse_retry_after(reply.headers)
        if (
            error.retry_after
            and isinstance(error, RateLimitError)
            and error.retry_after <= self.retry.max_retry_after
        ):
            # The server said to wait: the other requests of this transport wait too. Not
            # for longer than the policy waits: that request gives up at once, and the next
            # call would otherwise sleep out a quota's hours without a word.
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

    def _failure(
        self, exc: httpx.HTTPError, url: str, in_stream: bool = False, model: str | None = None
    ) -> TIRError:
        """Httpx's failure as ours; a try that may have been taken counts as `model`'s request.

        (A failure part way through a stream's body is counted by the stream, with what it
        carried.)
        """
        if model is not None and not in_stream and isinstance(exc, AFTER_SENDING):
            record_usage(model, None)
        return transport_error(
            exc,
            url,
            in_stream=in_stream,
            secret=self.config.secret(),
            proxy=self._proxy_shown,
        )

    def _read(self, reply: Reply, parse: Callable[[Any], _R], model: str | None) -> _R:
        """The one reader of a whole reply, for every API: JSON in, `parse`'s reply out.

        The key is hidden in the raw reply before anything decodes, quotes or cuts it (a
        gateway may echo the Authorization header); a failure carries the request id; the
        request and its usage are counted (`model`: the request's, None for a request that
        is no model's work, such as `GET /models`).
        """
        secret = self.config.secret()
        content = scrub_bytes(reply.content, secret)
        try:
            try:
                data = json.loads(content)
            except ValueError as e:
                text = content.decode("utf-8", "replace")
                raise InvalidResponseError(
                    f"the server's reply is not JSON: {quote(text, 200)!r}"
                ) from e
            result = parse(data)
        except TIRError as e:
            e.request_id = request_id_of(reply.headers, secret)
            if model is not None:
                record_usage(model, None)  # taken and answered, but its usage is unreadable
            raise
        if model is not None:
            usage: Usage | None = getattr(result, "usage", None)
            record_usage(model, usage, served=getattr(result, "model", None))
        return result

    # -- the request loop: send, retry, back off, map errors, respect limits -----------------
    # A reply read whole is retried until its headers arrive; a stream also while it has
    # handed nothing on (after that a retry would repeat what the caller has seen).

    def get(self, api: str, model: str | None = None) -> Any:
        """`GET {base}/{api}` (`"models"`, say) with retries: its JSON, read as every reply is.

        `model`: whose URL (a GenAI model's path names it); None for the config's.

        Raises:
            TIRError: a subclass for each kind of failure, after the retries the policy allows.
        """
        url = self.url(api, model)
        return self._read(self._send(url, None), _as_is, None)

    def post(self, url: str, body: bytes, parse: Callable[[Any], _R], model: str) -> _R:
        """POST `body` with retries; the reply's JSON read by `parse`, counted for `model`.

        Raises:
            TIRError: a subclass for each kind of failure, after the retries the policy allows.
        """
        return self._read(self._send(url, body, model), parse, model)

    async def apost(self, url: str, body: bytes, parse: Callable[[Any], _R], model: str) -> _R:
        """Async twin of `post`."""
        return self._read(await self._asend(url, body, model), parse, model)

    def stream(
        self, url: str, body: bytes, parser: ParserFactory[_T], model: str
    ) -> Generator[_T, None, None]:
        """POST for a streamed reply and yield what `parser` reads (see `sync_stream`)."""
        return sync_stream(self, url, body, parser, model)

    def astream(
        self, url: str, body: bytes, parser: ParserFactory[_T], model: str
    ) -> AsyncStream[_T]:
        """Async twin of `stream`."""
        return AsyncStream(self, url, body, parser, model)

    def _send(self, url: str, body: bytes | None, model: str | None = None) -> Reply:
        """POST (GET without a body) with retries; the reply, or the last try's error."""
        return send(self, url, body, model)

    async def _asend(self, url: str, body: bytes | None, model: str | None = None) -> Reply:
        """Async twin of `_send` (see `asend`)."""
        return await asend(self, url, body, model)

    async def _aopen(self, url: str, body: bytes, model: str) -> Opened:
        """Send a streamed POST; its reply once the headers are in (see `aopen`)."""
        return await aopen(self, url, body, model)


def _as_is(data: Any) -> Any:
    return data
