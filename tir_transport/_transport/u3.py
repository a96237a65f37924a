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

import http.client
import ssl
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    IncompleteRead,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from .._errors import TIRError
from .._secrets import scrub_secret
from .._usage import record_usage
from .failures import said_as_httpx
from .replies import Reply

__all__ = [
    "U3_ERRORS",
    "U3Opened",
    "U3Pool",
    "WriteTimeoutError",
    "u3_failure",
    "u3_timeout",
]

# What a urllib3 request can fail with: its own errors, and (defensively) a socket's.
U3_ERRORS = (urllib3.exceptions.HTTPError, OSError)


def u3_timeout(seconds: float) -> urllib3.Timeout:
    """As `http_timeout`: connecting within 10 s at most, `seconds` between two reads."""
    return urllib3.Timeout(connect=min(seconds, 10.0), read=seconds)


class WriteTimeoutError(urllib3.exceptions.TimeoutError):
    """The request could not be written within the timeout (httpx's `WriteTimeout`)."""


class _FinalResponse(http.client.HTTPResponse):
    """A reply read past interim ones (102 Processing, 103 Early Hints), as httpx reads it.

    http.client skips only `100 Continue`: another 1xx would be taken for the reply, and the
    real one left on the connection for the next request to read as its own.
    """

    def _read_status(self) -> tuple[str, int, str]:
        read = super()._read_status  # type: ignore[misc]
        version, status, reason = read()
        while 100 < status < 200 and status != 101:
            http.client.parse_headers(self.fp)  # the interim reply's headers, dropped
            version, status, reason = read()
        return version, status, reason


class _Connection(HTTPConnection):
    """urllib3's connection, timed and failing as httpx's does.

    - Connecting (TCP, then TLS) fails as a connection that could not be made, never as one
      that may have carried the request: a TLS handshake that times out is a
      `ConnectTimeoutError`, one refused a `NewConnectionError` (urllib3 calls the first a
      read timeout and the second "connection aborted").
    - Writing waits up to the request's timeout between two writes, not the connect timeout
      (urllib3's), and a write that times out is a `WriteTimeoutError`: a large body on a
      slow uplink goes out as it does on httpx.
    """

    response_class = _FinalResponse
    send_timeout: float | None = None

    def __init__(self, *args: Any, send_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.send_timeout = send_timeout

    def connect(self) -> None:
        try:
            super().connect()
        except (NewConnectionError, ConnectTimeoutError):
            raise
        except TimeoutError as e:  # the socket's (the TLS handshake's)
            raise ConnectTimeoutError(self, f"timed out connecting: {e}") from e
        except OSError as e:  # ssl.SSLError is one (a certificate refused, say)
            raise NewConnectionError(self, str(e)) from e

    def send(self, data: Any) -> None:
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        self.sock.settimeout(self.send_timeout)
        try:
            super().send(data)
        except TimeoutError as e:
            raise WriteTimeoutError(f"timed out writing the request: {e}") from e


class _HTTPSConnection(_Connection, HTTPSConnection):
    """`_Connection` over TLS."""


class _Pool(HTTPConnectionPool):
    """A host's connections; more in flight than it keeps are closed quietly after use.

    (urllib3 logs a warning for each: httpx's pool drops them without a word.)
    """

    ConnectionCls = _Connection

    def _put_conn(self, conn: Any) -> None:
        pool = self.pool
        if conn is not None and pool is not None and pool.full():
            conn.close()
            return
        super()._put_conn(conn)


class _HTTPSPool(_Pool, HTTPSConnectionPool):
    """`_Pool` over TLS."""

    ConnectionCls = _HTTPSConnection


class U3Pool:
    """This process's urllib3 pools, and each URL's pool and path worked out once."""

    def __init__(self, ssl_context: ssl.SSLContext, timeout: float) -> None:
        """Pools that verify TLS with `ssl_context`; no I/O happens here.

        `timeout`: the request timeout (`u3_timeout`; also the longest wait between two
        writes of a request), worked out once: urllib3 copies it per request.
        """
        # As many idle connections kept per host as httpx's pool keeps (more in flight are
        # made and dropped, never waited for).
        self._manager = urllib3.PoolManager(
            num_pools=16,
            maxsize=100,
            block=False,
            ssl_context=ssl_context,
            retries=False,
        )
        self._manager.pool_classes_by_scheme = {"http": _Pool, "https": _HTTPSPool}
        self._send_timeout = timeout
        self._timeout = u3_timeout(timeout)
        self._targets: dict[str, tuple[HTTPConnectionPool, str]] = {}

    def target(self, url: str) -> tuple[HTTPConnectionPool, str]:
        """The pool of `url`'s host and the path to ask it for (parsed once per URL)."""
        found = self._targets.get(url)
        if found is None:
            pool = self._manager.connection_from_url(url)
            # What its connections are made with (not a pool key: PoolManager refuses those).
            pool.conn_kw["send_timeout"] = self._send_timeout
            found = self._targets[url] = (pool, urllib3.util.parse_url(url).request_uri)
        return found

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
    ) -> Reply:
        """One try of `Transport._send`: the whole reply."""
        got = self._open(method, url, body, headers, whole=True)
        return Reply(got.status, got.headers, got.data, url)

    def open_stream(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        secret: str | None,
    ) -> U3Opened:
        """One try of a sync stream: the reply once its headers are in."""
        return U3Opened(self._open("POST", url, body, headers, whole=False), url, secret)

    def _open(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        *,
        whole: bool,
    ) -> urllib3.BaseHTTPResponse:
        pool, path = self.target(url)
        return pool.urlopen(
            method,
            path,
            body=body,
            headers=headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            timeout=self._timeout,
            preload_content=whole,
        )

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
            # where read(n) would wait for n bytes; with a size, urllib3 also holds a body
            # to its Content-Length (a stream cut short is an error, not an end).
            while raw := response.read1(65536):
                yield raw
            if response.length_remaining:  # pragma: no cover - urllib3 raises first
                raise IncompleteRead(0, response.length_remaining)
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
    # NewConnectionError is a ConnectTimeoutError; a write that timed out is not counted,
    # as httpx's WriteTimeout is not.
    if isinstance(exc, ConnectTimeoutError | SSLError | WriteTimeoutError):
        return False
    return isinstance(exc, ReadTimeoutError | ProtocolError | DecodeError)


def u3_failure(
    exc: BaseException,
    url: str,
    *,
    in_stream: bool = False,
    secret: str | None = None,
    model: str | None = None,
) -> TIRError:
    """A urllib3 failure as our error, in `transport_error`'s words.

    `model`: a try that may have been taken (`sent_before`) counts as its request, without
    usage, as `Transport._failure` counts httpx's (a stream's break is counted by the stream).
    """
    if model is not None and not in_stream and sent_before(exc):
        record_usage(model, None)
    timeout = None
    if isinstance(exc, NewConnectionError):  # a ConnectTimeoutError too, but no timeout
        pass
    elif isinstance(exc, ConnectTimeoutError):
        timeout = "ConnectTimeout"
    elif isinstance(exc, WriteTimeoutError):
        timeout = "WriteTimeout"
    elif isinstance(exc, ReadTimeoutError | TimeoutError):
        timeout = "ReadTimeout"
    # A chunk-size line that echoed the key sits in the ValueError urllib3's error was raised
    # from: said_as_httpx does not chain it then.
    return said_as_httpx(
        exc,
        url,
        scrub_secret(_detail(exc), secret),
        timeout=timeout,
        connecting=isinstance(exc, NewConnectionError),
        in_stream=in_stream,
        sent=sent_before(exc),
        secret=secret,
    )


def _detail(exc: BaseException) -> str:
    """What went wrong, in httpx's words where urllib3 wraps it in its own."""
    if isinstance(exc, NewConnectionError) and exc.__cause__ is not None:
        return str(exc.__cause__)  # "[Errno 111] Connection refused", without the connection
    inner = exc.args[-1] if isinstance(exc, ProtocolError) and exc.args else None
    if isinstance(inner, http.client.RemoteDisconnected):
        return "Server disconnected without sending a response."
    if isinstance(inner, http.client.IncompleteRead):
        got = inner.partial if isinstance(inner.partial, int) else len(inner.partial)
        more = f", {inner.expected} more expected" if inner.expected else ""
        return f"peer closed connection without sending complete message body ({got} bytes{more})"
    return str(exc) or type(exc).__name__
