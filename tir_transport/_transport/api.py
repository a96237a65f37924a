"""What every per-API client is: a thin layer over one `Transport`.

The chat, embeddings and rerank clients build bodies and read replies; sending, retrying,
pooling and error mapping are their transport's. Several clients may share one transport
(`transport=`): their requests then share its pools, limits and back-off.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Self, TypedDict, Unpack

import httpx

from .._config import TIRConfig, env_first
from .._limits import Limits
from .._retry import RetryPolicy
from .pools import Engine
from .transport import Closing, Transport

__all__ = ["APIClient", "HTTPOptions"]

# What `from_env` hands to the configuration; the rest is the client's own.
_CONFIG_ARGUMENTS = frozenset(inspect.signature(TIRConfig.from_env).parameters) - {"model"}


class HTTPOptions(TypedDict, total=False):
    """What every API client takes beside its config (see `APIClient.__init__`)."""

    transport: Transport | None
    retry: RetryPolicy | None
    limits: Limits | None
    http_client: httpx.Client | None
    http_async_client: httpx.AsyncClient | None
    engine: Engine | None


class APIClient(Closing):
    """A client of one API for one configuration, over a `Transport` (its own, or shared)."""

    # The environment variables naming this API's model, first found (none: TIRConfig's).
    model_env_vars: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TIRConfig, **options: Unpack[HTTPOptions]) -> None:
        """Create a client; no I/O happens here.

        Args:
            config: where and how to connect; `config.model` is this API's model.
            **options: `transport`, one to share with other clients of the same endpoint
                (its pools, limits and back-off); or the settings of the one made here:
                `retry`, `limits`, `http_client`, `http_async_client`, `engine` (see
                `Transport`).

        Raises:
            ValueError: a shared transport that is for another endpoint, key or settings.
        """
        unknown = sorted(set(options) - set(HTTPOptions.__annotations__))
        if unknown:
            # As a signature would: a misspelt option must not pass silently.
            raise TypeError(
                f"{type(self).__name__}() got an unexpected keyword argument {unknown[0]!r}"
            )
        transport = options.pop("transport", None)
        given = [name for name, value in options.items() if value is not None]
        if transport is not None and given:
            raise TypeError(f"pass {', '.join(given)} to the shared transport, not here")
        if transport is not None and transport.config.replace(model=config.model) != config:
            # Its key, host and timeouts would silently win over this config's.
            raise ValueError("the shared transport was made for another configuration")
        self.config = config
        # A shared transport is its owner's to close: this client closes only its own.
        self._owns_transport = transport is None
        self.transport = transport or Transport(
            config,
            retry=options.get("retry"),
            limits=options.get("limits"),
            http_client=options.get("http_client"),
            http_async_client=options.get("http_async_client"),
            engine=options.get("engine"),
        )

    @classmethod
    def from_env(cls, *, model: str | None = None, **options: Any) -> Self:
        """Build from arguments and the environment; the model from `model_env_vars`.

        `options` are `TIRConfig.from_env`'s arguments (the configuration, resolved as
        everywhere else) and this class's keyword arguments (everything else).
        A missing model is reported at the first request, with every other missing setting.
        """
        config = {k: options.pop(k) for k in list(options) if k in _CONFIG_ARGUMENTS}
        if cls.model_env_vars:
            model = model or env_first(cls.model_env_vars) or ""
            return cls(TIRConfig.from_env(**config).replace(model=model), **options)
        return cls(TIRConfig.from_env(model=model, **config), **options)

    def _url_of(self, api: str, model: str | None = None) -> str:
        """The URL of `api` for `model` (None: this client's), over a shared transport too."""
        return self.transport.url(api, model or self.config.model)

    @property
    def retry(self) -> RetryPolicy:
        """The transport's retry policy."""
        return self.transport.retry

    @retry.setter
    def retry(self, retry: RetryPolicy) -> None:
        self.transport.retry = retry

    @property
    def http_client(self) -> httpx.Client | None:
        """Your own sync httpx client, if the transport was given one."""
        return self.transport.http_client

    @property
    def http_async_client(self) -> httpx.AsyncClient | None:
        """Your own async httpx client, if the transport was given one."""
        return self.transport.http_async_client

    @property
    def limits(self) -> Limits:
        """The transport's limits (shared by every client of the transport)."""
        return self.transport.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self.transport.limits = limits

    def close(self) -> None:
        """Close the sync pool. Async pools close with `aclose()` or when their loop ends.

        A shared transport is left open: close it where it was made.
        """
        if self._owns_transport:
            self.transport.close()

    async def aclose(self) -> None:
        """Close the pool of the running event loop, and the sync pool (see `close`)."""
        if self._owns_transport:
            await self.transport.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
