"""urllib3 under our own sync pool: what sync requests run on by default (`engine="auto"`).

Why: one POST and its JSON cost about half as much client CPU over urllib3 as over httpx
(issue 31: 320 against 674 us; a stream's bytes 11 to 15 ms less per 500 chunks), and a chat
model's call is mostly that. What users pass stays httpx: their own `http_client` is used as
given, and a proxy from the environment keeps the httpx pool (whose proxy handling the
transport checks and names).

The failures are said as httpx's are (`transport_error`'s words, httpx's timeout names), so a
message does not depend on the engine. No cookie jar (httpx's costs 70 to 90 us a call and an
API answers no cookies), no redirects (as httpx), no retries of its own (ours apply).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping

import urllib3
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from .._errors import APIConnectionError, APITimeoutError, StreamInterruptedError, TIRError
from .._secrets import scrub_secret
from .replies import Reply

__all__ = [
    "U3_ERRORS",
    "U3Opened",
    "U3Pool",
    "u3_failure",
    "u3_timeout",
]

# What a urllib3 request can fail with: its own errors, and (defensively) a socket's.
U3_ERRORS = (urllib3.exceptions.HTTPError, OSError)


def u3_timeout(seconds: float) -> urllib3.Timeout:
    """As `http_timeout`: connecting within 10 s at most, `seconds` between two reads."""
    return urllib3.Timeout(connect=min(seconds, 10.0), read=seconds)


class U3Pool:
    """This process's urllib3 pools, and each URL's pool and path worked out once."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        """Pools that verify TLS with `ssl_context`; no I/O happens here."""
        # As many idle connections kept per host as httpx's pool keeps (more in flight are
        # made and dropped, never waited for).
        self._manager = urllib3.PoolManager(
            num_pools=16, maxsize=100, block=False, ssl_context=ssl_context, retries=False
        )
        self._targets: dict[str, tuple[HTTPConnectionPool, str]] = {}

    def target(self, url: str) -> tuple[HTTPConnectionPool, str]:
        """The pool of `url`'s host and the path to ask it for (parsed once per URL)."""
        found = self._targets.get(url)
        if found is None:
            pool = self._manager.connection_from_url(url)
            found = self._targets[url] = (pool, urllib3.util.parse_url(url).request_uri)
        return found

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: urllib3.Timeout,
    ) -> Reply:
        """One try of `Transport._send`: the whole reply."""
        pool, path = self.target(url)
        got = pool.urlopen(
            method,
            path,
            body=body,
            headers=headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            timeout=timeout,
            preload_content=True,
        )
        return Reply(got.status, got.headers, got.data, url)

    def open_stream(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: urllib3.Timeout,
        secret: str | None,
    ) -> U3Opened:
        """One try of a sync stream: the reply once its headers are in."""
        pool, path = self.target(url)
        got = pool.urlopen(
            "POST",
            path,
            body=body,
            headers=headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            timeout=timeout,
            preload_content=False,
        )
        return U3Opened(got, url, secret)

    def close(self) -> None:
        """Close every connection of every pool."""
        self._targets.clear()
        self._manager.clear()


class U3Opened:
    """A streamed reply's status, headers and bytes over urllib3 (see `SyncOpened`)."""

    __slots__ = ("_response", "_secret", "_url", "headers", "status")

    def __init__(self, response: urllib3.BaseHTTPResponse, url: str, secret: str | None) -> None:
        self._response = response
        self._url = url
        self._secret = secret
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    def read(self) -> bytes:
        """The whole body (an error's)."""
        try:
            return self._response.read()
        except U3_ERRORS as e:
            error = u3_failure(e, self._url, secret=self._secret)
        raise error  # outside the handler: chained only as u3_failure chains it

    def chunks(self) -> Iterator[bytes]:
        """The body's bytes as they come; a break is a `StreamInterruptedError`."""
        response = self._response
        try:
            # read1: what one read of the socket brings (an event as soon as it is sent),
            # where read(n) would wait for n bytes.
            while raw := response.read1():
                yield raw
            return
        except U3_ERRORS as e:
            error = u3_failure(e, self._url, in_stream=True, secret=self._secret)
        raise error

    def close(self) -> None:
        """Give the connection back (read to its end) or drop it (cut short)."""
        response = self._response
        if not response.closed:
            response.close()  # cut short: the connection cannot be reused
        response.release_conn()


def sent_before(exc: BaseException) -> bool:
    """Whether the request had gone out when `exc` came (the server may have taken it)."""
    if isinstance(exc, ConnectTimeoutError | SSLError):  # NewConnectionError is one too
        return False
    return isinstance(exc, ReadTimeoutError | ProtocolError | DecodeError)


def u3_failure(
    exc: BaseException,
    url: str,
    *,
    in_stream: bool = False,
    secret: str | None = None,
) -> TIRError:
    """A urllib3 failure as our error, in `transport_error`'s words."""
    detail = scrub_secret(str(exc) or type(exc).__name__, secret)
    error: TIRError
    if isinstance(exc, NewConnectionError):  # before ConnectTimeoutError: it is one
        error = APIConnectionError(f"could not connect to {url}: {detail}")
    elif isinstance(exc, ConnectTimeoutError):
        error = APITimeoutError(f"timed out talking to {url}: ConnectTimeout")
    elif isinstance(exc, ReadTimeoutError | TimeoutError):
        error = APITimeoutError(f"timed out talking to {url}: ReadTimeout")
    elif in_stream:
        error = StreamInterruptedError(f"the stream from {url} broke off: {detail}")
    elif sent_before(exc):
        error = APIConnectionError(f"the connection to {url} failed: {detail}")
    else:
        error = APIConnectionError(f"could not connect to {url}: {detail}")
    error.__cause__ = exc if detail == str(exc) else None
    error.__suppress_context__ = True
    return error
