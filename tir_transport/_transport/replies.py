"""What a reply is to the transport, whichever engine read it: a whole one, or one streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

from .failures import transport_error

__all__ = ["HttpxOpened", "HttpxSyncOpened", "Opened", "Reply", "SyncOpened"]


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole reply: what the error mapping and the one reader (`Transport._read`) need."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    url: str

    @classmethod
    def of(cls, response: httpx.Response) -> Reply:
        """An httpx response's (read whole)."""
        return cls(response.status_code, response.headers, response.content, str(response.url))


class Opened(Protocol):
    """A streamed reply once its headers are in; its failures are `TIRError`s already."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes:
        """The whole body (an error's)."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they come."""
        ...

    async def aclose(self) -> None:
        """Give the connection back (or drop it, cut short)."""
        ...

    def drop(self) -> None:
        """Let go of it when its event loop is closed (nothing can be awaited there)."""
        ...


class HttpxOpened:
    """`Opened` over an httpx response sent with `stream=True`."""

    __slots__ = ("_proxy", "_response", "_secret", "_url", "headers", "status")

    def __init__(
        self, response: httpx.Response, url: str, secret: str | None, proxy: str | None
    ) -> None:
        self._response = response
        self._url = url
        self._secret = secret
        self._proxy = proxy
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        """The whole body (an error's); a break is the error the sync loop raises."""
        try:
            return await self._response.aread()
        except httpx.HTTPError as e:
            error = transport_error(e, self._url, secret=self._secret, proxy=self._proxy)
        raise error  # outside the handler: chained only as transport_error chains it

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they come; a break is a `StreamInterruptedError`."""
        try:
            async for raw in self._response.aiter_bytes():
                yield raw
            return
        except httpx.HTTPError as e:
            error = transport_error(
                e, self._url, in_stream=True, secret=self._secret, proxy=self._proxy
            )
        raise error

    async def aclose(self) -> None:
        """Close the response (its connection goes back to the pool, or is dropped)."""
        await self._response.aclose()

    def drop(self) -> None:
        """Nothing: its socket closes when the collector takes it, as a dropped client's."""


class SyncOpened(Protocol):
    """`Opened`'s sync twin: a streamed reply once its headers are in."""

    status: int
    headers: Mapping[str, str]

    def read(self) -> bytes:
        """The whole body (an error's)."""
        ...

    def chunks(self) -> Iterator[bytes]:
        """The body's bytes as they come."""
        ...

    def close(self) -> None:
        """Give the connection back (or drop it, cut short)."""
        ...


class HttpxSyncOpened:
    """`SyncOpened` over an httpx response sent with `stream=True`."""

    __slots__ = ("_proxy", "_response", "_secret", "_url", "headers", "status")

    def __init__(
        self, response: httpx.Response, url: str, secret: str | None, proxy: str | None
    ) -> None:
        self._response = response
        self._url = url
        self._secret = secret
        self._proxy = proxy
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    def read(self) -> bytes:
        """The whole body (an error's)."""
        try:
            return self._response.read()
        except httpx.HTTPError as e:
            error = transport_error(e, self._url, secret=self._secret, proxy=self._proxy)
        raise error

    def chunks(self) -> Iterator[bytes]:
        """The body's bytes as they come; a break is a `StreamInterruptedError`."""
        try:
            yield from self._response.iter_bytes()
            return
        except httpx.HTTPError as e:
            error = transport_error(
                e, self._url, in_stream=True, secret=self._secret, proxy=self._proxy
            )
        raise error

    def close(self) -> None:
        """Close the response (its connection goes back to the pool, or is dropped)."""
        self._response.close()
