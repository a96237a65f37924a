"""The connection settings every adapter class shares, declared once (a pydantic mixin).

`ChatTIRLlama`, `TIREmbeddings`, `TIRLlamaLLM`, `TIREmbedding`, both `TIRRerank` classes (and
any class added later) inherit `TIRConnection`: the fields, their environment variables, defaults,
validation and docs live here, and so does the cached core client built from them. What each
kind of API adds is declared once too, for both frameworks: `TIRChatConnection`,
`TIREmbeddingsConnection`, `TIRRerankConnection`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Literal, TypeVar

import httpx
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._api_key import clean_api_key
from ._arguments import move_unknown_arguments
from ._chat.client import ChatClient
from ._chat.tools import ToolMode
from ._config import (
    DEFAULT_HOST,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT,
    EMBEDDING_MODEL_ENV_VARS,
    RERANK_MODEL_ENV_VARS,
    TIRConfig,
    env_first,
    from_environment,
    id_text,
)
from ._embeddings.client import DEFAULT_EMBED_CONCURRENCY, EmbeddingsClient
from ._limits import Limits
from ._rerank.client import (
    DEFAULT_RERANK_BATCH_SIZE,
    DEFAULT_RERANK_CONCURRENCY,
    DEFAULT_RERANK_TOP_N,
    RerankClient,
)
from ._secrets import refuse_secrets
from ._transport import APIClient

__all__ = [
    "CONNECTION_FIELDS",
    "TIRChatConnection",
    "TIRConnection",
    "TIREmbeddingsConnection",
    "TIRRerankConnection",
]

_C = TypeVar("_C", bound=APIClient)


class TIRConnection(BaseModel):
    """Where and how to reach TIR, and how much to send at once; shared by every adapter.

    Each setting falls back to its environment variable when not given; construction needs
    no key and does no I/O (a missing key or project is reported, all at once, by the first
    request).
    """

    api_key: SecretStr | None = Field(
        default=None,
        exclude=True,
        repr=False,
        validation_alias=AliasChoices("api_key", "openai_api_key"),
    )
    """The TIR API token; from `TIR_API_KEY` or `E2E_TIR_ACCESS_TOKEN` when not given. Never
    shown, logged or serialised. Also taken as ChatOpenAI's / OpenAIEmbeddings'
    `openai_api_key` (`OPENAI_API_KEY` is never read: that key is OpenAI's)."""
    project_id: str | None = None
    """The TIR project id, an int or a str (with or without `p-`); from `TIR_PROJECT_ID` or
    `E2E_TIR_PROJECT_ID`."""
    host: str | None = None
    """The TIR inference host; from `TIR_HOST`, else `https://infer.e2enetworks.net`."""
    endpoint_id: str | None = None
    """Set (an int or a str) for a self-deployed TIR model endpoint instead of a GenAI model."""
    base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("base_url", "openai_api_base", "api_base")
    )
    """A full `.../v1` URL that overrides host, project and model path; from `TIR_BASE_URL`.
    Also taken as ChatOpenAI's `openai_api_base` and OpenAILike's `api_base`."""
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, alias="request_timeout")
    """Seconds to wait for a reply, and between two stream chunks (alias `request_timeout`).
    None is the default; an `httpx.Timeout` gives its read timeout."""
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0)
    """Retries for connection errors, timeouts, 408/409/429 and 5xx (None: the default)."""
    allow_insecure_http: bool = False
    """Allow plain `http://` to a host that is not loopback (the key travels in clear)."""
    max_in_flight: int | None = Field(default=None, ge=1)
    """Requests in flight at once for this instance (threads; and per event loop, async)."""
    requests_per_minute: float | None = Field(default=None, gt=0)
    """Requests per minute for this instance, paced evenly (retries count). A 429 with
    `Retry-After` pauses every request of the instance, with or without these limits."""
    default_headers: dict[str, str] | None = None
    """Headers sent with every request (a gateway's, a tracing id); `Authorization` is ours."""
    http_client: httpx.Client | None = Field(default=None, exclude=True)
    """Your own `httpx.Client` for sync calls (a proxy, a custom CA, mTLS): used as given,
    never closed by us."""
    http_async_client: httpx.AsyncClient | None = Field(
        default=None,
        exclude=True,
        validation_alias=AliasChoices("http_async_client", "async_http_client"),
    )
    """Your own `httpx.AsyncClient` for async calls; used as given, never closed by us. An
    httpx async client belongs to one event loop: use it from that loop only. Also taken as
    LlamaIndex's `async_http_client`."""

    # Merged into every adapter class's config (the frameworks' bases set none of these).
    # populate_by_name: `timeout` and its alias both work. hide_input_in_errors: a validation
    # error would otherwise quote every argument, the key too. protected_namespaces: `model`
    # and `model_kwargs` are ours, not pydantic's.
    model_config = ConfigDict(
        populate_by_name=True,
        arbitrary_types_allowed=True,
        hide_input_in_errors=True,
        protected_namespaces=(),
    )

    _client_cache: tuple[tuple[Any, ...], Any] | None = PrivateAttr(default=None)
    # The dict field that takes other request fields (`model_kwargs`, `additional_kwargs`);
    # None for a class whose requests take none: an unknown argument is then an error.
    _request_fields: ClassVar[str | None] = None

    @model_validator(mode="before")
    @classmethod
    def _sort_arguments(cls, values: Any) -> Any:
        # The peers' names, secrets and unknown arguments: see move_unknown_arguments.
        if not isinstance(values, dict):
            return values
        return move_unknown_arguments(cls, values, into=cls._request_fields)

    @field_validator("timeout", "max_retries", mode="before")
    @classmethod
    def _none_is_the_default(cls, value: Any, info: ValidationInfo) -> Any:
        # LangChain's own ChatOpenAI snippet passes `timeout=None, max_retries=2` (and
        # programs pass `max_retries=None`): None is "not set" there, the client's default.
        if value is None:
            return DEFAULT_TIMEOUT if info.field_name == "timeout" else DEFAULT_MAX_RETRIES
        if isinstance(value, httpx.Timeout):
            # What this timeout is, httpx's read timeout (connecting is bounded by it too).
            if value.read is None:
                raise ValueError(
                    "an httpx.Timeout without a read timeout: requests need one, pass the "
                    "seconds to wait for a reply as timeout=... (a number)"
                )
            return value.read
        return value

    @field_validator("project_id", "endpoint_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any, info: ValidationInfo) -> str | None:
        # TIR's API reference types ids as integers: 4242 and "4242" both work.
        return id_text(value, info.field_name or "id")

    @model_validator(mode="after")
    def _read_environment(self) -> Any:
        # Once, here: what was given wins, then the environment, then the defaults.
        self.api_key, project_id, self.host, self.base_url = from_environment(
            api_key=self.api_key, project_id=self.project_id, host=self.host, base_url=self.base_url
        )
        self.project_id = None if project_id is None else str(project_id)
        return self

    @model_validator(mode="after")
    def _refuse_secret_fields(self) -> Any:
        # After _read_environment: a request field holding the key from TIR_API_KEY is
        # refused too, at construction rather than at the first request.
        secret = self._key_text()
        if self._request_fields:
            fields = getattr(self, self._request_fields) or {}
            refuse_secrets(fields, secret, where=f"{self._request_fields} field")
        refuse_secrets(getattr(self, "extra_body", None) or {}, secret, where="extra_body field")
        return self

    def _key_text(self) -> str | None:
        # For the payload builder, which refuses a request field holding the key. Cleaned
        # here too: `model_copy(update={"api_key": "..."})` sets a plain str, unvalidated.
        key = clean_api_key(self.api_key)
        return key.get_secret_value() if key else None

    def __setattr__(self, name: str, value: Any) -> None:
        # `llm.api_key = open("key").read()` is cleaned (and kept secret) as the argument is:
        # pydantic does not validate assignments here.
        if name == "api_key":
            value = clean_api_key(value)
        super().__setattr__(name, value)

    @model_validator(mode="after")
    def _build_client(self) -> Any:
        # Bad numbers (a timeout of 0, a batch size of 0) fail at construction: the adapter's
        # client is built here. No I/O, and no key or model is needed until a request.
        _ = self._client
        return self

    @property
    def _client(self) -> Any:
        """The adapter's core client; each adapter class says which (chat, embeddings...).

        None for the settings alone (`ray_tir` and the CLI build theirs from `tir_config`).
        """
        return None

    def __getstate__(self) -> dict[Any, Any]:
        if self.http_client is not None or self.http_async_client is not None:
            # A copy without them would quietly skip the proxy or CA they carry.
            raise TypeError(
                f"a {type(self).__name__} with your own http_client / http_async_client "
                "cannot be pickled (an httpx client cannot): build it where it is used (in "
                "the Ray actor, say)"
            )
        state: dict[Any, Any] = super().__getstate__()
        return state

    def tir_config(self, model: str) -> TIRConfig:
        """The core's configuration for `model` (bad numbers and ids raise here).

        Raises:
            ConfigurationError: a setting that cannot work (a negative timeout, say).
        """
        return TIRConfig(
            api_key=self.api_key,
            project_id=self.project_id,
            model=model,
            host=self.host or DEFAULT_HOST,
            endpoint_id=self.endpoint_id,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
            allow_insecure_http=self.allow_insecure_http,
            default_headers=dict(self.default_headers or {}),
        )

    def chat_client(self, model: str, tool_mode: ToolMode = "auto") -> ChatClient:
        """The chat client for `model` (cached; see `cached_client`)."""
        return self.cached_client(model, (tool_mode,), partial(ChatClient, tool_mode=tool_mode))

    def limits(self) -> Limits:
        """The `Limits` of `max_in_flight` and `requests_per_minute`."""
        return Limits(
            max_in_flight=self.max_in_flight, requests_per_minute=self.requests_per_minute
        )

    def cached_client(self, model: str, options: tuple[Any, ...], build: Callable[..., _C]) -> _C:
        """The core client for the settings as they are now, reused while they stay the same.

        Built again when a field changed (`model_copy(update=...)`, an assignment), so a
        change takes effect instead of silently keeping the old settings.

        Args:
            model: the model the client is for.
            options: the adapter's own settings that shape the client (part of the key).
            build: called as `build(config, limits=..., http_client=..., http_async_client=...)`.
        """
        # Read straight from the instance's dict: this runs on every request (about 1 µs,
        # against 13 for getattr over every field).
        values = self.__dict__
        key = (*map(values.get, CONNECTION_FIELDS), model, options)
        cached = self._client_cache
        if cached is not None and cached[0] == key:
            client: _C = cached[1]
            return client
        client = build(
            self.tir_config(model),
            limits=self.limits(),
            http_client=self.http_client,
            http_async_client=self.http_async_client,
        )
        self._client_cache = (key, client)
        return client


# Every field of the connection, in order (also the names `ray_tir` and the CLI accept).
CONNECTION_FIELDS: tuple[str, ...] = tuple(TIRConnection.model_fields)


class TIRChatConnection(TIRConnection):
    """The connection plus the chat settings both chat adapters take under the same names.

    Settings whose names differ between the frameworks' peers stay with each adapter:
    `max_tokens` (LangChain also takes ChatOpenAI's `max_completion_tokens`, OpenAILike has no
    such name) and `stop` (ChatOpenAI takes one str too, and `stop_sequences`); so do those of
    one framework alone (LangChain's `streaming`, `model_kwargs`, ...; LlamaIndex's `logprobs`,
    `strict`, `additional_kwargs`, ...).
    """

    model: str = Field(default=DEFAULT_MODEL, validation_alias=AliasChoices("model", "model_name"))
    """The model: a TIR GenAI model name (the body's `model`, and part of the GenAI path).
    Also taken as `model_name` (ChatOpenAI's name for it)."""
    tool_mode: ToolMode = "auto"
    """How tools are sent: `"auto"` (native, and in the prompt if the endpoint rejects them),
    `"native"` or `"prompt"` (Llama 3.1's JSON tool-call format in the prompt)."""
    temperature: float | None = Field(default=None, ge=0)
    """Sampling temperature; the server's default when None."""
    top_p: float | None = None
    """Nucleus sampling: sample from the tokens that make up this much probability."""
    frequency_penalty: float | None = None
    """Penalise a token by how often it already appeared."""
    presence_penalty: float | None = None
    """Penalise a token that already appeared at all."""
    seed: int | None = None
    """Seed the server's sampling, for repeatable answers."""
    logprobs: bool | None = None
    """Return each token's log probability (LangChain: `response_metadata["logprobs"]`,
    streamed too; LlamaIndex: `ChatResponse.logprobs`)."""
    top_logprobs: int | None = None
    """With `logprobs`, how many alternatives per token."""
    context_window: int | None = Field(default=None, gt=0)
    """Tokens the endpoint serves: LangChain's profile reports it (`max_input_tokens`),
    LlamaIndex packs prompts up to it. By default the model's own window from the core's
    table, the same in both frameworks. Set it for a deployment that serves less (vLLM's
    `max_model_len`: `tir-llama doctor` prints it)."""

    @property
    def _client(self) -> ChatClient:
        return self.chat_client(self.model, self.tool_mode)


class TIREmbeddingsConnection(TIRConnection):
    """The connection plus what every embeddings adapter shares: the model and the wire.

    The batch size stays with each adapter, under its framework's name (`batch_size`,
    LlamaIndex's `embed_batch_size`).
    """

    model: str | None = None
    """The embedding model's API name; from `TIR_EMBEDDING_MODEL`. Required: TIR documents
    no default embedding model."""
    max_concurrency: int = Field(default=DEFAULT_EMBED_CONCURRENCY, ge=1)
    """Requests in flight at once for one call (for the sync API too, on threads)."""
    encoding_format: Literal["base64", "float"] = "base64"
    """How vectors travel; base64 is a third of the bytes (floats are asked for by itself from
    a server that refuses base64)."""
    dimensions: int | None = None
    """Shorter vectors, for models that support it."""
    truncate_prompt_tokens: int | None = None
    """Let the server (vLLM) cut each text to this many tokens instead of failing on one that
    is too long; recent vLLM takes -1 for the model's own maximum."""
    query_prefix: str | None = None
    """Put before every query: e5 models want `"query: "`."""
    document_prefix: str | None = None
    """Put before every document: e5 models want `"passage: "`."""

    @model_validator(mode="after")
    def _read_model(self) -> Any:
        self.model = self.model or env_first(EMBEDDING_MODEL_ENV_VARS)
        return self

    def embeddings_client(self, batch_size: int) -> EmbeddingsClient:
        """The core client for these settings (cached; see `TIRConnection.cached_client`).

        A missing model is reported by the first request, with every other missing setting.
        """
        options: dict[str, Any] = {
            "batch_size": batch_size,
            "max_concurrency": self.max_concurrency,
            "encoding_format": self.encoding_format,
            "dimensions": self.dimensions,
            "truncate_prompt_tokens": self.truncate_prompt_tokens,
            "query_prefix": self.query_prefix,
            "document_prefix": self.document_prefix,
        }
        return self.cached_client(
            self.model or "", tuple(options.values()), partial(EmbeddingsClient, **options)
        )


class TIRRerankConnection(TIRConnection):
    """The connection plus what every rerank adapter shares: the model, `top_n`, the batches."""

    model: str | None = None
    """The rerank model's API name; from `TIR_RERANK_MODEL`. Required: TIR documents no
    default rerank model."""
    top_n: int | None = Field(default=DEFAULT_RERANK_TOP_N, ge=0)
    """How many documents (the best) to keep; None keeps them all, reordered; 0 keeps none
    (and sends nothing), as LangChain's and LlamaIndex's other rerankers do."""
    batch_size: int = Field(default=DEFAULT_RERANK_BATCH_SIZE, ge=1)
    """Documents per request; more than this go in several requests, merged by score."""
    max_concurrency: int = Field(default=DEFAULT_RERANK_CONCURRENCY, ge=1)
    """Requests in flight at once for one call (for the sync API too, on threads)."""
    truncate_prompt_tokens: int | None = None
    """Let the server (vLLM) cut each (query, document) pair to this many tokens instead of
    failing on one that is too long; recent vLLM takes -1 for the model's own maximum."""

    @model_validator(mode="after")
    def _read_model(self) -> Any:
        self.model = self.model or env_first(RERANK_MODEL_ENV_VARS)
        return self

    def rerank_client(self) -> RerankClient:
        """The core client for these settings (cached; see `TIRConnection.cached_client`).

        A missing model is reported by the first request, with every other missing setting.
        """
        options: dict[str, Any] = {
            "batch_size": self.batch_size,
            "max_concurrency": self.max_concurrency,
            "truncate_prompt_tokens": self.truncate_prompt_tokens,
        }
        return self.cached_client(
            self.model or "", tuple(options.values()), partial(RerankClient, **options)
        )
