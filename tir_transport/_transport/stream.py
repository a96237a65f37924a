"""Streamed replies: the sync loop and the async iterator, retried while nothing is handed on.

Each API reads its own stream's bytes with a `StreamParser` made per attempt; the transport
sends, retries, maps errors, holds the slot and counts the attempt's usage, however it ends.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from .._errors import TIRError
from .._limits import _AsyncSlot
from .._usage import PendingRequest, Usage, request_started
from .replies import Opened, Reply
from .send import sync_open

if TYPE_CHECKING:
    from .transport import Transport

__all__ = ["AsyncStream", "ParserFactory", "StreamParser", "sync_stream"]

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


class StreamParser(Protocol[_T_co]):
    """Reads one streamed reply: made per attempt from its headers (`ParserFactory`).

    `model` and `usage` are what the reply said so far (the transport counts them when the
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


# Called with the reply's headers (a request id to quote), once per attempt.
ParserFactory = Callable[[Mapping[str, str]], StreamParser[_T]]


def sync_stream(
    transport: Transport, url: str, body: bytes, parser: ParserFactory[_T], model: str
) -> Generator[_T, None, None]:
    """POST for a streamed reply and yield what `parser` reads from its bytes.

    Retried while nothing has been yielded. The response and the slot are given back on
    every exit: the end, an error, `close()` (a caller's `break`), garbage collection.
    Each try the server took counts as a request of `model` (see `track_usage`), with
    the usage the stream carried, if it got that far.
    """
    # The headers first, as in `send`: a missing key fails before a slot is taken.
    transport._headers(stream=True)
    attempt = 0
    while True:
        handed_on = False
        try:
            with transport._slot():
                opened = sync_open(transport, url, body, model)
                try:
                    if opened.status >= 400:
                        content = opened.read()
                        reply = Reply(opened.status, opened.headers, content, url)
                        error = transport._status_error(reply)
                    else:
                        parse = parser(opened.headers)
                        pending = request_started(model)
                        try:
                            for raw in opened.chunks():
                                for item in parse.feed(raw):
                                    handed_on = True
                                    yield item
                            parse.end()
                            return
                        finally:
                            pending.finish(parse.model, parse.usage)
                finally:
                    opened.close()
        except TIRError as e:  # the engine's, or the parser's (an error event, a truncation)
            error = e
        if handed_on:
            raise error
        time.sleep(transport._backoff(error, attempt, url))
        attempt += 1


class AsyncStream(Generic[_T]):
    """The items of one streamed POST (`Transport.astream`): an async iterator.

    Retried while nothing has been handed on, as `sync_stream` is. A class rather than an
    async generator, on purpose: when an event loop ends, asyncio closes every async
    generator still open, all at once, and a generator that closes another one in its own
    cleanup races that close ("aclose(): asynchronous generator is already running", logged
    at shutdown for every stream a caller left with `break`). Nobody but its owner closes
    this object, so an adapter's generator may close it in `finally`.
    """

    def __init__(
        self, transport: Transport, url: str, body: bytes, parser: ParserFactory[_T], model: str
    ) -> None:
        self._transport = transport
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
        self._response: Opened | None = None
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
            if response is not None:
                response.drop()
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
            if response is not None:
                response.drop()

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
        except TIRError as e:  # the engine's: the stream broke off
            await self._failed(e)
            return
        try:
            self._ready.extend(self._parse.feed(raw))
        except TIRError as e:  # an error event, or a chunk that cannot be read
            await self._failed(e)

    async def _open(self) -> None:
        transport = self._transport
        self._loop = asyncio.get_running_loop()
        # The headers first, as in `Transport._asend`: a missing key fails before a slot is
        # taken or a pool made for it.
        transport._headers(stream=True)
        self._slot = transport._aslot()
        await self._slot.__aenter__()
        try:
            response = await transport._aopen(self._url, self._body, self._model)
        except TIRError as e:
            await self._failed(e)
            return
        self._response = response
        if response.status >= 400:
            try:
                content = await response.read()
            except TIRError as e:  # the error body broke off: as the sync loop does
                await self._failed(e)
                return
            reply = Reply(response.status, response.headers, content, self._url)
            await self._failed(transport._status_error(reply))
            return
        self._pending = request_started(self._model)
        self._parse = self._parser(response.headers)
        self._bytes = response.chunks()

    async def _failed(self, error: TIRError) -> None:
        """Retry, or raise `error` once the items before it are read."""
        await self._release()
        if not self._handed_on and not self._ready:
            delay = self._transport.retry.delay(error, self._attempt)
            if delay is not None:
                self._transport._log_retry(self._url, delay, self._attempt, error)
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


def _close_later(loop: asyncio.AbstractEventLoop, response: Opened) -> None:
    task = loop.create_task(response.aclose())
    _closing.add(task)  # held until done: the loop keeps only weak references to tasks
    task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()
