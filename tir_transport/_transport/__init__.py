"""The one transport every API shares, and the per-API clients' base.

- `transport`: `Transport` (send with retries, GET and POST, limits, error mapping, the one
  reader of a whole reply); `asend` the async loop and a stream's try, per engine; `pools`
  its pools (per process, per event loop, fork-safe) and proxies; `stream` the streamed
  replies' loops (sync and async); `replies` a reply whatever the engine read it; `aio` the
  aiohttp engine (`engine="aiohttp"`, imported only when used); `failures` httpx's failures
  as our errors; `keys` the keys hidden in the HTTP libraries' log records.
- `api`: `APIClient`, what the chat, embeddings and rerank clients are over a transport.
- `plans`: sans-IO request plans and their drivers, and many requests in flight.
"""

from .api import APIClient, HTTPOptions
from .plans import Plan, adrive, ain_flight, check_batching, drive, in_flight
from .pools import proxy_for
from .stream import AsyncStream, ParserFactory, StreamParser
from .transport import Transport

__all__ = [
    "APIClient",
    "AsyncStream",
    "HTTPOptions",
    "ParserFactory",
    "Plan",
    "StreamParser",
    "Transport",
    "adrive",
    "ain_flight",
    "check_batching",
    "drive",
    "in_flight",
    "proxy_for",
]
