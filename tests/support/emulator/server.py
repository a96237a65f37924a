"""The loopback server: HTTP/1.1 over asyncio streams, in a background thread.

It reads each request, records it (`requests`), counts it in flight and sends the head of
every response (`_send`, `_sent`); which answer a request gets is the routes' business
(`Emulator._respond`).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from http import HTTPStatus
from typing import Self
from urllib.parse import parse_qs, urlsplit

from tests.support.emulator.state import EmulatorState
from tests.support.emulator.wire import RecordedRequest

# The test generation (see `Emulator.reset`) of the request a connection's task is answering.
_GENERATION: contextvars.ContextVar[int] = contextvars.ContextVar("emulator_generation")


class Server(EmulatorState):
    """The socket side of the emulator: start, stop, read requests, send responses."""

    # -- control ----------------------------------------------------------------------------

    def start(self) -> Self:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP -------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        number = self.connections
        self._open_numbers.add(number)
        try:
            while True:
                line = await reader.readline()
                if not line.strip():
                    break
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                parts = urlsplit(target)
                request = RecordedRequest(method, parts.path, parse_qs(parts.query), headers, body)
                self.requests.append(request)
                generation = self._generation
                _GENERATION.set(generation)  # this connection's task: read by `_sent`
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                started = time.monotonic()
                self._notify()
                self._release_holds()
                try:
                    keep_open = await self._respond(request, writer)
                finally:
                    if generation == self._generation:
                        self.in_flight -= 1
                        self.spans.append((started, time.monotonic()))
                    self._notify()
                if not keep_open:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)
            self._open_numbers.discard(number)
            self._notify()

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"content-type: {content_type}",
            f"content-length: {len(body)}",
            f"x-request-id: req-{uuid.uuid4().hex[:12]}",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        # Recorded before it is written: a client that has the response finds it in `sent`.
        self._sent(status)
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()

    def _sent(self, status: int) -> None:
        # A response to a request of an earlier test (a slow reply the client gave up on)
        # belongs to that test: it must not show in this one's statuses.
        if _GENERATION.get(self._generation) == self._generation:
            self.sent.append((time.monotonic(), status))
        self._notify()

    async def _respond(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        """Answer one request (`Emulator`: by route); False closes the connection."""
        raise NotImplementedError
