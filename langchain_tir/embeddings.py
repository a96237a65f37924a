"""`TIREmbeddings`: E2E Networks TIR embedding models as LangChain embeddings."""

from __future__ import annotations

from typing import Any, Literal, Self

from langchain_core.embeddings import Embeddings
from langchain_core.utils import from_env, secret_from_env
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tir_transport import DEFAULT_HOST, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, EmbeddingsClient
from tir_transport._config import (
    API_KEY_ENV_VARS,
    BASE_URL_ENV_VARS,
    EMBEDDING_MODEL_ENV_VARS,
    PROJECT_ID_ENV_VARS,
    id_text,
)
from tir_transport._embeddings_client import (
    DEFAULT_EMBED_BATCH_SIZE,
    DEFAULT_EMBED_CONCURRENCY,
    embeddings_client_for,
)
from tir_transport._http import ClientCache

from ._errors import langchain_errors

__all__ = ["TIREmbeddings"]


class TIREmbeddings(BaseModel, Embeddings):
    """Embeddings from an E2E Networks TIR embedding model (GenAI API or a model endpoint).

    Setup:
        `pip install "tir-llama[langchain]"`, then set `TIR_API_KEY`, `TIR_PROJECT_ID` and
        `TIR_EMBEDDING_MODEL` (the model's API name on its page in TIR), or pass them.

    Example:
        ```python
        from langchain_core.vectorstores import InMemoryVectorStore
        from langchain_tir import TIREmbeddings

        embeddings = TIREmbeddings()  # model from TIR_EMBEDDING_MODEL
        store = InMemoryVectorStore.from_texts(["TIR runs on E2E Cloud."], embeddings)
        store.similarity_search("Where does TIR run?", k=1)
        ```

    Texts go out in batches of `batch_size`, up to `max_concurrency` requests at once (for
    `embed_documents` too, on threads); vectors always come back in input order.
    """

    model: str | None = Field(
        default_factory=from_env(list(EMBEDDING_MODEL_ENV_VARS), default=None)
    )
    """The embedding model's API name; from `TIR_EMBEDDING_MODEL`. Required: TIR has no default."""
    api_key: SecretStr | None = Field(
        default_factory=secret_from_env(list(API_KEY_ENV_VARS), default=None)
    )
    """The TIR API token; read from `TIR_API_KEY` or `E2E_TIR_ACCESS_TOKEN` when not given."""
    project_id: str | None = Field(
        default_factory=from_env(list(PROJECT_ID_ENV_VARS), default=None)
    )
    """The TIR project id, an int or a str (with or without `p-`); from `TIR_PROJECT_ID`."""
    host: str = Field(default_factory=from_env("TIR_HOST", default=DEFAULT_HOST))
    """The TIR inference host; from `TIR_HOST`."""
    endpoint_id: str | None = None
    """Set (an int or a str) for a self-deployed TIR model endpoint instead of a GenAI model."""
    base_url: str | None = Field(default_factory=from_env(list(BASE_URL_ENV_VARS), default=None))
    """A full `.../v1` URL that overrides host, project and model path; from `TIR_BASE_URL`."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds to wait for each reply."""
    max_retries: int = DEFAULT_MAX_RETRIES
    """Retries for connection errors, timeouts, 408/409/429 and 5xx."""
    allow_insecure_http: bool = False
    """Allow plain `http://` to a host that is not loopback (the key travels in clear)."""
    max_in_flight: int | None = Field(default=None, ge=1)
    """Requests in flight at once for this instance (threads; and per event loop, async)."""
    requests_per_minute: float | None = Field(default=None, gt=0)
    """Requests per minute for this instance, paced evenly (retries count). A 429 with
    `Retry-After` pauses every request of the instance, with or without these limits."""

    batch_size: int = Field(default=DEFAULT_EMBED_BATCH_SIZE, ge=1)
    """Texts per request."""
    max_concurrency: int = Field(default=DEFAULT_EMBED_CONCURRENCY, ge=1)
    """Requests in flight at once."""
    encoding_format: Literal["base64", "float"] = "base64"
    """How vectors travel; base64 is a third of the bytes (floats are asked for by itself
    from a server that refuses base64)."""
    dimensions: int | None = None
    """Shorter vectors, for models that support it."""
    truncate_prompt_tokens: int | None = None
    """Let the server (vLLM) cut each text to this many tokens instead of failing on one that
    is too long; recent vLLM takes -1 for the model's own maximum."""
    query_prefix: str | None = None
    """Put before every query: e5 models want `"query: "`."""
    document_prefix: str | None = None
    """Put before every document: e5 models want `"passage: "`."""

    # hide_input_in_errors: a validation error would otherwise quote every argument, the key too.
    model_config = ConfigDict(
        populate_by_name=True, protected_namespaces=(), hide_input_in_errors=True
    )

    _client_cache: ClientCache | None = PrivateAttr(default=None)

    @field_validator("project_id", "endpoint_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any, info: ValidationInfo) -> str | None:
        # TIR's API reference types ids as integers: 4242 and "4242" both work.
        return id_text(value, info.field_name or "id")

    @model_validator(mode="after")
    def _check_config(self) -> Self:
        # Bad numbers fail here; no I/O, and no key or model needed until the first request.
        _ = self._client
        return self

    @property
    def _client(self) -> EmbeddingsClient:
        self._client_cache = embeddings_client_for(self, self._client_cache)
        return self._client_cache[1]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents: one vector per text, in order (with `document_prefix`).

        Raises:
            InputError: a text is empty or not a str (nothing is sent).
            ContextLengthExceededError: a text is too long; `input_index` names it.
        """
        with langchain_errors():
            return self._client.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed a query (with `query_prefix`)."""
        with langchain_errors():
            return self._client.embed_query(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async twin of `embed_documents`, natively async."""
        with langchain_errors():
            return await self._client.aembed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Async twin of `embed_query`, natively async."""
        with langchain_errors():
            return await self._client.aembed_query(text)
