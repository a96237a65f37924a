"""The one transport every API shares, and the per-API clients' base.

- `transport`: `Transport` (GET and POST with retries, limits, error mapping, the one
  reader of a whole reply); `send` the sync loop and `asend` the async one, each with a
  stream's try, per engine; `pools` its pools (per process, per event loop, fork-safe),
  proxies and the engine chosen; `stream` the streamed replies' loops (sync and async);
  `replies` a reply whatever the engine read it; `u3` and `aio` the default engine
  (`engine="auto"`: urllib3 sync, aiohttp async, each imported on first use); `failures`
  the HTTP libraries' failures as our errors; `keys` the keys hidden in the HTTP libraries'
  log records.
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
