"""The chat API over the shared transport: requests, streams, and the endpoint's fallbacks."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Generator, Iterator, Mapping
from typing import Any, Unpack

from .._config import TIRConfig
from .._errors import StreamInterruptedError, TIRError, request_id_of
from .._secrets import key_hider
from .._sse import ServerSentEvent, SSEDecoder
from .._transport import APIClient, AsyncStream, HTTPOptions, ParserFactory, adrive, drive
from .._usage import Usage
from .negotiate import EndpointMemory, Negotiation, OpenStream, negotiates
from .tools import ToolMode
from .wire import (
    DONE,
    ChatChunk,
    ChatCompletion,
    check_single_choice,
    parse_chunk,
    parse_completion,
)

__all__ = ["AsyncChatStream", "ChatClient"]


class _ChatStreamParser:
    """Reads one streamed chat reply: its chunks, and whether its end was a real end."""

    __slots__ = (
        "decoder",
        "done",
        "events",
        "finish_reason",
        "hider",
        "model",
        "request_id",
        "secret",
        "tools",
        "url",
        "usage",
    )

    def __init__(
        self, headers: Mapping[str, str], url: str, config: TIRConfig, tools: bool
    ) -> None:
        self.secret = config.secret()
        self.hider = key_hider(self.secret)
        self.request_id = request_id_of(headers, self.secret)
        self.url = url
        self.tools = tools
        self.decoder = SSEDecoder()
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.done = False
        self.events = 0

    def feed(self, raw: bytes) -> Iterator[ChatChunk]:
        """The chunks these bytes complete (none for `[DONE]` and for events after it)."""
        for event in self.decoder.feed(raw):
            chunk = self.on_event(event)
            if chunk is not None:
                yield chunk

    def on_event(self, event: ServerSentEvent) -> ChatChunk | None:
        """The chunk of one event, or None for `[DONE]` and for events after it."""
        self.events += 1
        if self.done:
            return None
        # A gateway may echo the Authorization header into an event: hidden before anything
        # parses, quotes or cuts it (the one stream-side twin of Transport._read).
        data = self.hider.text(event.data)
        if data == DONE:
            self.done = True
            return None
        if event.event == "error":
            # Some gateways name the event instead of shaping the data.
            try:
                payload = json.loads(data)
            except ValueError:
                payload = {"message": data}
            if not isinstance(payload, dict):
                payload = {"message": data}
            payload.setdefault("object", "error")
            data = json.dumps(payload)
        chunk = parse_chunk(data, request_id=self.request_id, secret=self.secret)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.model:
            self.model = chunk.model
        return chunk

    def end(self) -> None:
        """Raise if the body ended before the reply did (the HTTP layer counts the usage)."""
        if self.finish_reason is None:
            if not self.events:
                # Only what is known: no event came. With tools, one known cause is a server
                # that cannot stream tool calls (llama.cpp's answers so).
                hint = (
                    " The request carries tools, and some servers cannot stream tool calls "
                    "(llama.cpp's answers so): call without streaming, or with "
                    "tool_mode='prompt'."
                    if self.tools
                    else ""
                )
                error = StreamInterruptedError(
                    f"{self.url} sent an empty stream (HTTP 200 and no event at all): there is no "
                    f"answer.{hint}",
                    request_id=self.request_id,
                )
                error.empty_stream = True
                raise error
            how = "sent [DONE]" if self.done else "closed the stream"
            raise StreamInterruptedError(
                f"{self.url} {how} before the reply finished (no finish_reason): the answer is "
                "incomplete",
                request_id=self.request_id,
            )


class ChatClient(APIClient):
    """Sends chat requests for one configuration, sync or async, with retries and pooling.

    The pools, retries and error mapping are its `Transport`'s: one sync pool per process,
    one async pool per event loop, so the object works across `asyncio.run` calls and threads.
    """

    def __init__(
        self,
        config: TIRConfig,
        *,
        tool_mode: ToolMode = "auto",
        **options: Unpack[HTTPOptions],
    ) -> None:
        """Create a client; no I/O happens here.

        Args:
            config: where and how to connect.
            tool_mode: how tools are sent. `"auto"` sends them natively and, if the endpoint
                rejects them (vLLM without tool parsing), in the prompt, remembering that in
                this client (never for the process); `"native"` and `"prompt"` force one way.
            **options: `transport` to share one, or `retry`, `limits`, `http_client`,
                `http_async_client` for its own (see `APIClient`).
        """
        if tool_mode not in ("auto", "native", "prompt"):
            raise ValueError(f"tool_mode must be 'auto', 'native' or 'prompt', got {tool_mode!r}")
        super().__init__(config, **options)
        self.tool_mode: ToolMode = tool_mode
        # What this client's endpoint rejected; never shared with other clients.
        self._endpoints = EndpointMemory()

    def __getstate__(self) -> dict[str, Any]:
        # What the endpoint rejected stays with this client: a copy learns on its own.
        return {k: v for k, v in self.__dict__.items() if k != "_endpoints"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._endpoints = EndpointMemory()

    # -- chat steps -------------------------------------------------------------------------

    def _url(self, payload: Mapping[str, Any]) -> str:
        model = payload.get("model")
        return self._url_of("chat/completions", model if isinstance(model, str) else None)

    def _prepare(self, payload: Mapping[str, Any]) -> tuple[str, bytes]:
        # A body given whole (not built by build_payload) is held to one choice too: with n=2
        # vLLM bills both answers, and interleaves them in a stream that would read as one.
        check_single_choice(payload)
        url = self._url(payload)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return url, body

    def _model(self, payload: Mapping[str, Any]) -> str:
        model = payload.get("model")
        return model if isinstance(model, str) and model else self.config.model

    def _parser(self, url: str, payload: Mapping[str, Any]) -> ParserFactory[ChatChunk]:
        tools = bool(payload.get("tools"))
        return lambda headers: _ChatStreamParser(headers, url, self.config, tools)

    # -- one request, sent as it is -------------------------------------------------------

    def _create_once(self, payload: Mapping[str, Any]) -> ChatCompletion:
        url, body = self._prepare(payload)
        model = self._model(payload)
        return self.transport.post(url, body, parse_completion, model)

    async def _acreate_once(self, payload: Mapping[str, Any]) -> ChatCompletion:
        url, body = self._prepare(payload)
        model = self._model(payload)
        return await self.transport.apost(url, body, parse_completion, model)

    def _stream_once(self, payload: Mapping[str, Any]) -> Generator[ChatChunk, None, None]:
        url, body = self._prepare(payload)
        return self.transport.stream(url, body, self._parser(url, payload), self._model(payload))

    def _astream_once(self, payload: Mapping[str, Any]) -> AsyncStream[ChatChunk]:
        url, body = self._prepare(payload)
        return self.transport.astream(url, body, self._parser(url, payload), self._model(payload))

    # -- public: one request, with the fallbacks the endpoint forces -------------------------

    def _negotiation(self, payload: Mapping[str, Any]) -> Negotiation:
        return Negotiation(payload, self._url(payload), self.tool_mode, self._endpoints)

    def create(self, payload: Mapping[str, Any]) -> ChatCompletion:
        """Send a non-streamed request and return the reply.

        Tools and JSON schemas fall back to what the endpoint takes (see `tool_mode`).

        Raises:
            TIRError: a subclass for each kind of failure, after the retries the policy allows.
        """
        if not negotiates(payload):
            return self._create_once(payload)  # the common case: no Negotiation to build
        return drive(self._negotiation(payload).exchange(), self._create_once)

    def stream(self, payload: Mapping[str, Any]) -> Generator[ChatChunk, None, None]:
        """Send a streamed request and yield its chunks.

        Retries and fallbacks happen only before the first chunk is handed on. The response is
        closed on every exit: end, error, `break`, garbage collection.

        Raises:
            StreamInterruptedError: the stream broke off or carried an error event.
            TIRError: any other failure, after the retries the policy allows.
        """
        # The sync driver of the negotiation's stream plan (AsyncChatStream is the async one).
        plan = self._negotiation(payload).stream_exchange()
        stream: Generator[ChatChunk, None, None] | None = None
        try:
            step = next(plan)
            while True:
                if isinstance(step, OpenStream):
                    if stream is not None:
                        stream.close()
                    stream = self._stream_once(step.body)
                else:
                    yield from step
                assert stream is not None
                event: ChatChunk | TIRError | None
                try:
                    event = next(stream)
                except StopIteration:
                    event = None
                except TIRError as e:
                    event = e
                try:
                    step = plan.send(event)
                except StopIteration:
                    return
        finally:
            if stream is not None:
                stream.close()

    async def acreate(self, payload: Mapping[str, Any]) -> ChatCompletion:
        """Async twin of `create`."""
        if not negotiates(payload):
            return await self._acreate_once(payload)
        return await adrive(self._negotiation(payload).exchange(), self._acreate_once)

    def astream(self, payload: Mapping[str, Any]) -> AsyncChatStream:
        """Async twin of `stream`: `async for chunk in client.astream(payload)`.

        Closing it (`await stream.aclose()`), cancelling the task that reads it, or reading
        it to its end gives the connection back at once.
        """
        return AsyncChatStream(self, payload)


class AsyncChatStream:
    """The chunks of one streamed chat request (`ChatClient.astream`): an async iterator.

    Async twin of `ChatClient.stream`, the async driver of the same plan: retries (the
    transport's) and fallbacks (the negotiation's) happen only before a chunk is handed on. A
    class, not an async generator, for the reason `AsyncStream` gives: an adapter's generator
    may close it in `finally`.
    """

    def __init__(self, client: ChatClient, payload: Mapping[str, Any]) -> None:
        self._client = client
        self._plan = client._negotiation(payload).stream_exchange()
        self._started = False
        self._stream: AsyncStream[ChatChunk] | None = None
        self._ready: deque[ChatChunk] = deque()  # what the plan handed on, to be read
        self._finished = False

    def __aiter__(self) -> AsyncChatStream:
        return self

    async def __anext__(self) -> ChatChunk:
        try:
            while not self._ready:
                if self._finished:
                    raise StopAsyncIteration
                await self._step()
        except BaseException:
            # Ended (an error, a cancel, the end): reading on must not send it again.
            await self.aclose()
            raise
        return self._ready.popleft()

    async def aclose(self) -> None:
        """Stop reading and give the connection back now."""
        self._finished = True
        self._ready.clear()
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _step(self) -> None:
        """Send the plan the next event of its stream, and do what it answers."""
        try:
            if not self._started:
                self._started = True
                step = next(self._plan)
            else:
                assert self._stream is not None
                event: ChatChunk | TIRError | None
                try:
                    event = await anext(self._stream)
                except StopAsyncIteration:
                    event = None
                except TIRError as e:
                    event = e
                step = self._plan.send(event)
        except StopIteration:
            self._finished = True
            return
        if isinstance(step, OpenStream):
            if self._stream is not None:
                await self._stream.aclose()
            self._stream = self._client._astream_once(step.body)
        else:
            self._ready.extend(step)
