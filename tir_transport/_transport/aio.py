"""aiohttp under our own async pools: what async requests run on by default (`engine="auto"`).

Why: httpx's async pool does quadratic work as connections grow (encode/httpx#3215,
encode/httpcore#1035); issue 31 measured 5.0 ms of CPU a chat request at 32 in flight over
httpx's async client and 0.27 ms over aiohttp, and a bulk job's actor is CPU-bound on it. What
users pass stays httpx: their own `http_async_client` is used as given, and a proxy from the
environment keeps the httpx pool (whose proxy handling the transport checks and names).

The failures are said as httpx's are (`transport_error`'s words, httpx's timeout names), so a
message does not depend on the engine.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping

import aiohttp
import httpx

from .._errors import TIRError
from .._secrets import scrub_secret
from .._usage import record_usage
from .failures import said_as_httpx
from .replies import Reply

__all__ = [
    "AIO_ERRORS",
    "AioOpened",
    "abandon",
    "aio_failure",
    "aio_timeout",
    "joined",
    "new_session",
    "open_stream",
    "request",
    "sent_before",
]


def aio_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """As `http_timeout`: connecting within 10 s at most, `seconds` between two reads.

    Connecting is a free connection, the name, TCP and TLS; writing is bounded by
    `until_headers`.
    """
    connect = min(seconds, 10.0)
    return aiohttp.ClientTimeout(
        total=None, connect=connect, sock_connect=connect, sock_read=seconds
    )


def until_headers(seconds: float) -> float:
    """The bound on sending a request and getting its reply's headers.

    aiohttp has no write timeout (its read timeout starts once the body is written): a server
    that takes the connection but never reads a large body would hold the request for ever,
    where httpx's write timeout ends it. This bounds the connect, the write and the wait for
    the headers together, as httpx bounds each.
    """
    return 2 * seconds + min(seconds, 10.0)


def new_session(ssl_context: ssl.SSLContext) -> aiohttp.ClientSession:
    """A session for one event loop: as many connections as httpx's pool, kept 30 s."""
    connector = aiohttp.TCPConnector(
        limit=1000, limit_per_host=0, keepalive_timeout=30, ssl=ssl_context
    )
    # No cookies, as on the urllib3 engine: an API the key authenticates needs none, and a
    # jar costs every reply; no environment proxies (the transport keeps httpx's pool when
    # one applies, with the proxy it checked); header lines as long as httpcore takes.
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        max_line_size=_HEADER_BYTES,
        max_field_size=_HEADER_BYTES,
    )


_HEADER_BYTES = 100 * 1024


def joined(response: aiohttp.ClientResponse) -> httpx.Headers:
    """A reply's headers as httpx gives them: any case, a name sent twice read as one "a, b".

    So that a request id (or a `Retry-After`) reads the same whichever engine got the reply.
    """
    return httpx.Headers(list(response.raw_headers))


def sent_before(exc: BaseException) -> bool:
    """Whether the request had gone out when `exc` came (the server may have taken it)."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return False
    # A reply that could not be parsed (httpx's RemoteProtocolError) came after the request.
    return isinstance(
        exc,
        aiohttp.ServerDisconnectedError
        | aiohttp.ClientPayloadError
        | aiohttp.ClientOSError
        | aiohttp.SocketTimeoutError
        | aiohttp.ClientResponseError,
    )


def aio_failure(
    exc: BaseException,
    url: str,
    *,
    in_stream: bool = False,
    secret: str | None = None,
    model: str | None = None,
) -> TIRError:
    """An aiohttp failure as our error, in `transport_error`'s words.

    `model`: a try that may have been taken (`sent_before`) counts as its request, without
    usage, as `Transport._failure` counts httpx's (a stream's break is counted by the stream).
    """
    if model is not None and not in_stream and sent_before(exc):
        record_usage(model, None)
    timeout = None
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        timeout = "ConnectTimeout"
    elif isinstance(exc, TimeoutError):
        timeout = "ReadTimeout"
    # A ClientResponseError's repr and args carry the request's headers (Authorization in
    # clear), which httpx's never show: said_as_httpx does not chain it then.
    return said_as_httpx(
        exc,
        url,
        scrub_secret(str(exc) or type(exc).__name__, secret),
        timeout=timeout,
        connecting=isinstance(exc, aiohttp.ClientConnectorError),
        in_stream=in_stream,
        sent=sent_before(exc),
        secret=secret,
    )


# What an aiohttp request can fail with (its timeouts are TimeoutErrors too).
AIO_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


class AioOpened:
    """A streamed reply's status, headers and bytes over aiohttp (see `stream.Opened`)."""

    __slots__ = ("_response", "_secret", "_url", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, url: str, secret: str | None) -> None:
        self._response = response
        self._url = url
        self._secret = secret
        self.status = response.status
        self.headers: Mapping[str, str] = joined(response)

    async def read(self) -> bytes:
        """The whole body (an error's)."""
        try:
            return await self._response.read()
        except AIO_ERRORS as e:
            error = aio_failure(e, self._url, secret=self._secret)
        raise error  # outside the handler: chained only as aio_failure chains it

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they come; a break is a `StreamInterruptedError`."""
        try:
            async for raw in self._response.content.iter_any():
                yield raw
            return
        except AIO_ERRORS as e:
            error = aio_failure(e, self._url, in_stream=True, secret=self._secret)
        raise error

    async def aclose(self) -> None:
        """Give the connection back (read to its end) or drop it (cut short)."""
        self.close()

    def drop(self) -> None:
        """Its loop is closed: said closed, so that its collection does not use the loop.

        (aiohttp's `close` does nothing else once the loop is closed; the socket closes
        when the collector takes it, as an httpx response's does.)
        """
        self._response.close()

    def close(self) -> None:
        """`aclose`, for the collector's path: aiohttp's release and close do no I/O."""
        response = self._response
        if response.content.at_eof():
            response.release()
        else:
            response.close()


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    timeouts: aiohttp.ClientTimeout,
) -> Reply:
    """One try of `Transport._asend` on aiohttp: the whole reply."""
    async with asyncio.timeout(until_headers(timeouts.sock_read or 60.0)):
        got = await session.request(
            method, url, data=body, headers=headers, timeout=timeouts, allow_redirects=False
        )
    async with got:
        return Reply(got.status, joined(got), await got.read(), url)


async def open_stream(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeouts: aiohttp.ClientTimeout,
    secret: str | None,
) -> AioOpened:
    """One try of `AsyncStream` on aiohttp: the reply once its headers are in."""
    async with asyncio.timeout(until_headers(timeouts.sock_read or 60.0)):
        got = await session.request(
            "POST", url, data=body, headers=headers, timeout=timeouts, allow_redirects=False
        )
    return AioOpened(got, url, secret)


def abandon(session: aiohttp.ClientSession) -> None:
    """Close a session no loop will close: its loop closed by hand, or left idle at exit."""
    connector = session.connector
    if connector is not None:
        # Forgets its connections (their sockets close when collected, as a dropped httpx
        # client's do): their close would need a running loop.
        connector._close()
    session.detach()  # said closed: aiohttp does not warn when it is collected
