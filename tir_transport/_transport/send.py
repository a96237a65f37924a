"""The sync request loop (`Transport._send`) and a sync stream's try, per engine.

urllib3 under our own pool (`engine="auto"`), or httpx (`engine="httpx"`, your own
`http_client`, a proxy from the environment): the same loop, the same retries, slots and usage
counting, urllib3's failures said as httpx's are. `asend` is its async twin.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx

from .._errors import TIRError
from .._usage import record_usage
from .replies import HttpxSyncOpened, Reply, SyncOpened

if TYPE_CHECKING:
    from .transport import Transport

__all__ = ["send", "sync_open"]


def send(transport: Transport, url: str, body: bytes | None, model: str | None = None) -> Reply:
    """POST (GET without a body) with retries; the reply, or the last try's error.

    `model`: a try that failed after it was sent (a timeout waiting for the reply) is
    counted as its request, without usage (see `track_usage`).
    """
    headers = transport._headers()
    method = "GET" if body is None else "POST"
    caught: tuple[type[BaseException], ...]
    pool = transport._u3()
    if pool is not None:
        from . import u3

        def once() -> Reply:
            assert pool is not None
            return pool.request(method, url, body, headers)

        def failed(e: BaseException) -> TIRError:
            return u3.u3_failure(e, url, secret=transport.config.secret(), model=model)

        caught = u3.U3_ERRORS
    else:
        client = transport._sync_client()

        def once() -> Reply:
            return Reply.of(
                client.request(
                    method, url, content=body, headers=headers, timeout=transport._timeout
                )
            )

        def failed(e: BaseException) -> TIRError:
            assert isinstance(e, httpx.HTTPError)
            return transport._failure(e, url, model=model)

        caught = (httpx.HTTPError,)
    attempt = 0
    while True:
        try:
            with transport._slot():
                try:
                    reply = once()
                except KeyboardInterrupt:
                    # Ctrl-C while out, as a cancel in `asend`: the server may have taken
                    # it; which, the client cannot tell.
                    if model is not None:
                        record_usage(model, None)
                    raise
        except caught as e:
            error = failed(e)
        else:
            if reply.status < 400:
                return reply
            error = transport._status_error(reply)
        time.sleep(transport._backoff(error, attempt, url))
        attempt += 1


def sync_open(transport: Transport, url: str, body: bytes, model: str) -> SyncOpened:
    """Send a streamed POST; its reply once the headers are in (a sync stream's one try).

    Raises:
        TIRError: it could not be sent, or no reply came (counted as `model`'s request
            when it may have been taken).
    """
    headers = transport._headers(stream=True)
    secret = transport.config.secret()
    pool = transport._u3()
    if pool is not None:
        from . import u3

        try:
            return pool.open_stream(url, body, headers, secret)
        except u3.U3_ERRORS as e:
            error = u3.u3_failure(e, url, secret=secret, model=model)
        raise error  # outside the handler: chained only as the mapping chains it
    try:
        client = transport._sync_client()
        request = client.build_request(
            "POST", url, content=body, headers=headers, timeout=transport._timeout
        )
        return HttpxSyncOpened(
            client.send(request, stream=True), url, secret, transport._proxy_shown
        )
    except httpx.HTTPError as e:
        error = transport._failure(e, url, model=model)
    raise error
