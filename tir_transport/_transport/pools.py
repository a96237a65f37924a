"""The httpx connection pools of one transport: one per process (sync), one per event loop.

httpx clients are created on first use: one sync client per process, one async client per
event loop (so a transport works across `asyncio.run` calls and in threads that run their own
loops). After `os.fork` the child makes its own and never touches the parent's sockets. A
user's own `http_client` / `http_async_client` is used as given and never closed here.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Literal

import httpx

from .._errors import ConfigurationError

if TYPE_CHECKING:
    import aiohttp

    from .u3 import U3Pool

__all__ = [
    "Engine",
    "Pools",
    "choose_engine",
    "http_timeout",
    "installed",
    "proxy_for",
    "proxy_name",
]

_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=30)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process, shared by every pool.

    Building one (loading the CA bundle) costs about 20 ms, and a new async pool is made for
    every event loop (each `asyncio.run`).
    """
    return httpx.create_ssl_context()


def http_timeout(seconds: float) -> httpx.Timeout:
    """Httpx's timeout for `seconds`; the read timeout also bounds the gap between two chunks."""
    return httpx.Timeout(seconds, connect=min(seconds, 10.0))


def proxy_name(proxy: str) -> str:
    """A proxy URL as errors show it: without the user and password it may carry."""
    parts = httpx.URL(proxy)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.host}{port}"


def proxy_for(url: str) -> str | None:
    """The proxy httpx sends a request for `url` through, from the environment, or None.

    `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (any case), read as httpx reads
    them for a client it builds (ours are), with its own helpers, so the answer is its.
    """
    try:
        from httpx._utils import URLPattern, get_environment_proxies
    except ImportError:  # pragma: no cover - a future httpx; the proxy is then not named
        return None
    target = httpx.URL(url)
    # httpx sorts its mounts (the most specific pattern first) and takes the first match.
    mounts = sorted((URLPattern(k), v) for k, v in get_environment_proxies().items())
    return next((proxy for pattern, proxy in mounts if pattern.matches(target)), None)


# What `Transport(engine=...)` takes (see its docstring).
Engine = Literal["auto", "httpx"]
_ENGINES = ("auto", "httpx")


def choose_engine(engine: str | None) -> Engine:
    """The engine asked for, or the `TIR_HTTP_ENGINE` variable's, or `"auto"`."""
    if engine is None:
        chosen = os.environ.get("TIR_HTTP_ENGINE", "").strip().lower() or "auto"
        if chosen not in _ENGINES:
            raise ConfigurationError(
                f"TIR_HTTP_ENGINE must be 'auto' or 'httpx', got {chosen!r}: unset it, or set "
                "it to httpx to send everything on httpx"
            )
        engine = chosen
    if engine not in _ENGINES:
        raise ValueError(f"engine must be 'auto' or 'httpx', got {engine!r}")
    return "httpx" if engine == "httpx" else "auto"


@functools.cache
def installed(module: str) -> bool:
    """Whether `module` can be imported (looked for once per process)."""
    return importlib.util.find_spec(module) is not None


class Pools:
    """The sync pool of this process and the async pool of each event loop, made on first use.

    `owner`: whose pools these are; the sync pool is closed when it is collected (users rarely
    close a chat model). `proxy`: the one proxy every pool uses (read and checked once by the
    transport, so that a later event loop's pool cannot pick up another from the environment).
    """

    def __init__(
        self,
        owner: object,
        timeout: httpx.Timeout,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
    ) -> None:
        """Pools for `owner`; no I/O, nothing made until first use."""
        self._owner = weakref.ref(owner)
        self._timeout = timeout
        self.http_client = http_client
        self.http_async_client = http_async_client
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._sync: httpx.Client | None = None
        self._u3: U3Pool | None = None
        self._finalizer: weakref.finalize[[], object] | None = None
        self._async: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()
        self._aio: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()
        # When these pools go (or the interpreter exits), sessions whose loop will not close
        # them are let go quietly, as a dropped httpx pool is, not with aiohttp's "Unclosed
        # client session" error: the last loop closed by hand (the next loop's first request
        # sweeps the others), and a loop left open and idle (`run_until_complete` without
        # `close()`, a common script ending). Only in the process that made them: a forked
        # child inherits this finalizer, and the parent's sockets are not its to close.
        self._abandon = weakref.finalize(self, _abandon_idle, self._aio, os.getpid())

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            # The parent's sockets (and TLS state) must not be touched: drop, never close.
            if self._finalizer is not None:
                self._finalizer.detach()
            self._abandon.detach()
            self._reset()

    def sync(self, proxy: str | None) -> httpx.Client:
        """The sync client: the user's own, or this process's pool."""
        if self.http_client is not None:
            return self.http_client
        self._check_fork()
        client = self._sync
        if client is None:
            with self._lock:
                client = self._sync
                if client is None:
                    client = self._sync = httpx.Client(
                        timeout=self._timeout,
                        limits=_LIMITS,
                        verify=_ssl_context(),
                        proxy=proxy,
                        trust_env=False,
                    )
                    owner = self._owner()
                    if owner is not None:
                        # Its sockets close when the owner is collected, if not before.
                        self._finalizer = weakref.finalize(owner, client.close)
        return client

    def u3(self) -> U3Pool:
        """This process's urllib3 pool (`engine="auto"`), made on first use."""
        self._check_fork()
        pool = self._u3
        if pool is None:
            from .u3 import U3Pool  # urllib3 is needed only by this engine

            with self._lock:
                pool = self._u3
                if pool is None:
                    pool = self._u3 = U3Pool(_ssl_context(), self._timeout.read or 60.0)
        return pool

    async def async_(self, proxy: str | None) -> httpx.AsyncClient:
        """The async client: the user's own, or the running event loop's pool."""
        if self.http_async_client is not None:
            return self.http_async_client
        self._check_fork()
        loop = asyncio.get_running_loop()
        entry = self._async.get(loop)
        if entry is not None:
            return entry[0]
        self._forget_closed_loops()
        client = httpx.AsyncClient(
            timeout=self._timeout,
            limits=_LIMITS,
            verify=_ssl_context(),
            proxy=proxy,
            trust_env=False,
        )
        guard = _close_on_loop_shutdown(client.aclose)
        # Started in this loop, the guard is one of the loop's async generators: asyncio.run
        # (loop.shutdown_asyncgens) closes it while the loop still runs, closing the client.
        await guard.asend(None)
        with self._lock:  # threads with loops of their own add theirs while this one sweeps
            self._async[loop] = (client, guard)
        return client

    async def aio(self) -> aiohttp.ClientSession:
        """The running event loop's aiohttp session (`engine="auto"`), made on first use."""
        self._check_fork()
        loop = asyncio.get_running_loop()
        entry = self._aio.get(loop)
        if entry is not None:
            return entry[0]
        from .aio import new_session  # aiohttp is needed only by this engine

        self._forget_closed_loops()
        session = new_session(_ssl_context())
        guard = _close_on_loop_shutdown(session.close)
        await guard.asend(None)  # closed by the loop's shutdown, as an httpx pool is
        with self._lock:
            self._aio[loop] = (session, guard)
        return session

    def _forget_closed_loops(self) -> None:
        # A loop closed by hand (`loop.close()` without `shutdown_asyncgens`, as asyncio.run
        # does) never closed its pool: the pool's sockets hold the loop, so the weak key never
        # dies. Dropped here, the pool and its loop are garbage and their sockets close; at
        # most one closed loop's pool waits for the next new loop.
        with self._lock:
            for loop in [loop for loop in self._async if loop.is_closed()]:
                self._async.pop(loop, None)
            closed = [loop for loop in self._aio if loop.is_closed()]
            if closed:
                from .aio import abandon

                for loop in closed:
                    abandon(self._aio.pop(loop)[0])

    def close(self) -> None:
        """Close the sync pool."""
        with self._lock:
            client, self._sync = self._sync, None
            finalizer, self._finalizer = self._finalizer, None
            u3, self._u3 = self._u3, None
        if finalizer is not None:
            finalizer.detach()
        if client is not None:
            client.close()
        if u3 is not None:
            u3.close()

    async def aclose(self) -> None:
        """Close the pool of the running event loop, and the sync pool."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._async.pop(loop, None)
            aio = self._aio.pop(loop, None)
        if entry is not None:
            await entry[1].aclose()
        if aio is not None:
            await aio[1].aclose()
        self.close()


def _abandon_idle(
    sessions: weakref.WeakKeyDictionary[
        asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, AsyncGenerator[None, None]]
    ],
    pid: int,
) -> None:
    if os.getpid() != pid:
        return  # a forked child's copy (see `Pools._reset`)
    try:
        here = asyncio.get_running_loop()  # pools collected inside a coroutine of this thread
    except RuntimeError:
        here = None
    # Another thread's running loop is left alone: its shutdown closes its session, and its
    # sockets must not be touched from here.
    idle = [
        loop for loop in list(sessions) if loop.is_closed() or not loop.is_running() or loop is here
    ]
    if idle:
        from .aio import abandon

        for loop in idle:
            session, guard = sessions.pop(loop)
            abandon(session)
            _finish(guard)


def _finish(guard: AsyncGenerator[None, None]) -> None:
    """End a session's shutdown guard here, without its loop.

    Left suspended, the guard would be handed to its loop when collected, to be closed by a
    task that never runs ("Task was destroyed but it is pending!" at exit). Its `close()` of
    an abandoned session returns at once, so closing it needs no loop.
    """
    closing = guard.aclose()
    try:
        closing.send(None)
    except (StopIteration, RuntimeError):
        return  # closed (or already closing)
    closing.close()  # it awaited after all: let it go unfinished rather than block


async def _close_on_loop_shutdown(
    close: Callable[[], Awaitable[object]],
) -> AsyncGenerator[None, None]:
    try:
        yield
        yield  # never reached: the generator waits here until the loop shuts it down
    finally:
        await close()
