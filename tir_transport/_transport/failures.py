"""httpx's failures as our errors."""

from __future__ import annotations

import httpx

from .._errors import APIConnectionError, APITimeoutError, StreamInterruptedError, TIRError
from .._secrets import holds_secret, scrub_secret

__all__ = ["AFTER_SENDING", "said_as_httpx", "transport_error"]


def transport_error(
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
AFTER_SENDING = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


def said_as_httpx(
    exc: BaseException,
    url: str,
    detail: str,
    *,
    timeout: str | None,
    connecting: bool,
    in_stream: bool,
    sent: bool,
    secret: str | None,
) -> TIRError:
    """Another engine's failure in `transport_error`'s words, so no message names the engine.

    `timeout`: httpx's name for it (`"ReadTimeout"`), or None; `connecting`: no connection
    was made; `sent`: the server may have taken the request. Chained to `exc` only when
    nothing in its chain holds the key (an HTTP library's error may quote a request's headers
    or a reply's raw bytes).
    """
    error: TIRError
    if timeout is not None:
        error = APITimeoutError(f"timed out talking to {url}: {timeout}")
    elif connecting:
        error = APIConnectionError(f"could not connect to {url}: {detail}")
    elif in_stream:
        error = StreamInterruptedError(f"the stream from {url} broke off: {detail}")
    elif sent:
        error = APIConnectionError(f"the connection to {url} failed: {detail}")
    else:
        error = APIConnectionError(f"could not connect to {url}: {detail}")
    error.__cause__ = exc if not holds_secret(exc, secret) else None
    error.__suppress_context__ = True
    return error
