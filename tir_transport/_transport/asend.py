"""The async request loop (`Transport._asend`) and a stream's try (`AsyncStream`), per engine.

httpx's async pool, or our aiohttp pool when the transport runs on aiohttp (see
`Transport.engine`): the same loop, the same retries, slots and usage counting, aiohttp's
failures said as httpx's are.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx

from .._errors import TIRError
from .._usage import record_usage
from .replies import HttpxOpened, Opened, Reply

if TYPE_CHECKING:
    from .transport import Transport

__all__ = ["aopen", "asend"]


async def asend(
    transport: Transport, url: str, body: bytes | None, model: str | None = None
) -> Reply:
    """`Transport._send`'s async twin, over the engine the transport runs async requests on."""
    headers = transport._headers()
    method = "GET" if body is None else "POST"
    caught: tuple[type[BaseException], ...]
    if transport._on_aiohttp():
        from . import aio  # aiohttp is needed only by this engine

        session = await transport._pools.aio()
        timeouts = aio.aio_timeout(transport.config.timeout)

        async def once() -> Reply:
            return await aio.request(session, method, url, body, headers, timeouts)

        def failed(e: BaseException) -> TIRError:
            return aio.aio_failure(e, url, secret=transport.config.secret(), model=model)

        caught = aio.AIO_ERRORS
    else:
        client = await transport._async_client()

        async def once() -> Reply:
            return Reply.of(
                await client.request(
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
            async with transport._aslot():
                try:
                    reply = await once()
                except asyncio.CancelledError:
                    # Cancelled while out (`wait_for`, a task cancelled): the server may
                    # have taken it; which, the client cannot tell.
                    if model is not None:
                        record_usage(model, None)
                    raise
        except caught as e:
            error = failed(e)
        else:
            if reply.status < 400:
                return reply
            error = transport._status_error(reply)
        await asyncio.sleep(transport._backoff(error, attempt, url))
        attempt += 1


async def aopen(transport: Transport, url: str, body: bytes, model: str) -> Opened:
    """Send a streamed POST; its reply once the headers are in (`AsyncStream`'s one try).

    Raises:
        TIRError: it could not be sent, or no reply came (counted as `model`'s request
            when it may have been taken).
    """
    headers = transport._headers(stream=True)
    secret = transport.config.secret()
    if transport._on_aiohttp():
        from . import aio

        timeout = aio.aio_timeout(transport.config.timeout)
        try:
            session = await transport._pools.aio()
            return await aio.open_stream(session, url, body, headers, timeout, secret)
        except asyncio.CancelledError:
            record_usage(model, None)  # as `asend`: it may have been taken
            raise
        except aio.AIO_ERRORS as e:
            error = aio.aio_failure(e, url, secret=secret, model=model)
        raise error  # outside the handler: chained only as the mapping chains it
    try:
        http = await transport._async_client()
        request = http.build_request(
            "POST", url, content=body, headers=headers, timeout=transport._timeout
        )
        return HttpxOpened(
            await http.send(request, stream=True), url, secret, transport._proxy_shown
        )
    except asyncio.CancelledError:
        record_usage(model, None)  # as `asend`: it may have been taken
        raise
    except httpx.HTTPError as e:
        error = transport._failure(e, url, model=model)
    raise error
