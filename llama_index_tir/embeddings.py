"""`TIREmbedding`: E2E Networks TIR embedding models as a LlamaIndex embedding model."""

from __future__ import annotations

from typing import Any, Literal

import llama_index.core.instrumentation as instrument
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation.events.embedding import (
    EmbeddingEndEvent,
    EmbeddingStartEvent,
)

from tir_transport import DEFAULT_HOST, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, EmbeddingsClient
from tir_transport._config import (
    API_KEY_ENV_VARS,
    BASE_URL_ENV_VARS,
    EMBEDDING_MODEL_ENV_VARS,
    HOST_ENV_VARS,
    PROJECT_ID_ENV_VARS,
    env_first,
    id_text,
)
from tir_transport._embeddings_client import (
    DEFAULT_EMBED_BATCH_SIZE,
    DEFAULT_EMBED_CONCURRENCY,
    embeddings_client_for,
)
from tir_transport._http import ClientCache

__all__ = ["TIREmbedding"]

# llama_index.core re-exports it without listing it in __all__.
dispatcher = instrument.get_dispatcher(__name__)  # type: ignore[attr-defined]


class TIREmbedding(BaseEmbedding):
    """Embeddings from an E2E Networks TIR embedding model, for LlamaIndex.

    Example:
        ```python
        from llama_index.core import Settings
        from llama_index_tir import TIREmbedding

        # reads TIR_API_KEY, TIR_PROJECT_ID and TIR_EMBEDDING_MODEL
        Settings.embed_model = TIREmbedding()
        ```

    `get_text_embedding_batch` (what indexes and ingestion pipelines call) sends batches of
    `embed_batch_size` texts, up to `max_concurrency` at once, sync and async; callbacks and
    instrumentation events fire once per batch. Exact token counts come from `track_usage()`:
    `TokenCountingHandler` counts embedding tokens with its own tokenizer.
    """

    model: str | None = Field(
        default=None,
        description="The embedding model's API name; from TIR_EMBEDDING_MODEL. Required.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        exclude=True,
        description="TIR API token; from TIR_API_KEY or E2E_TIR_ACCESS_TOKEN when not given.",
    )
    project_id: str | None = Field(
        default=None,
        description="TIR project id, an int or a str; from TIR_PROJECT_ID or E2E_TIR_PROJECT_ID.",
    )
    host: str | None = Field(default=None, description="Inference host; from TIR_HOST.")
    endpoint_id: str | None = Field(
        default=None, description="A self-deployed TIR model endpoint instead of a GenAI model."
    )
    base_url: str | None = Field(
        default=None, description="A full .../v1 URL overriding host, project and model path."
    )
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, description="Seconds per request.")
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0, description="Retries.")
    allow_insecure_http: bool = Field(
        default=False, description="Allow plain http:// to a host that is not loopback."
    )
    max_in_flight: int | None = Field(
        default=None, ge=1, description="Requests in flight at once (per event loop, async)."
    )
    requests_per_minute: float | None = Field(
        default=None, gt=0, description="Requests per minute, paced evenly (retries count)."
    )
    embed_batch_size: int = Field(
        default=DEFAULT_EMBED_BATCH_SIZE, gt=0, le=2048, description="Texts per request."
    )
    max_concurrency: int = Field(
        default=DEFAULT_EMBED_CONCURRENCY, ge=1, description="Requests in flight at once."
    )
    encoding_format: Literal["base64", "float"] = Field(
        default="base64", description="How vectors travel (base64: a third of the bytes)."
    )
    dimensions: int | None = Field(default=None, description="Shorter vectors, if supported.")
    truncate_prompt_tokens: int | None = Field(
        default=None,
        description="Let the server (vLLM) cut each text to this many tokens (-1: the model's "
        "maximum, on recent vLLM) instead of failing on a text that is too long.",
    )
    query_prefix: str | None = Field(
        default=None, description="Put before every query (e5 models want 'query: ')."
    )
    document_prefix: str | None = Field(
        default=None, description="Put before every document (e5 models want 'passage: ')."
    )

    # A validation error would otherwise quote every argument, the key too.
    model_config = ConfigDict(hide_input_in_errors=True)

    _client_cache: ClientCache | None = PrivateAttr(default=None)

    @field_validator("project_id", "endpoint_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any, info: ValidationInfo) -> str | None:
        # TIR's API reference types ids as integers: 4242 and "4242" both work.
        return id_text(value, info.field_name or "id")

    @model_validator(mode="after")
    def _read_environment(self) -> TIREmbedding:
        # Read the environment once, here: construction still needs no key and does no I/O.
        if self.api_key is None:
            found = env_first(API_KEY_ENV_VARS)
            self.api_key = SecretStr(found) if found else None
        self.model = self.model or env_first(EMBEDDING_MODEL_ENV_VARS)
        self.model_name = self.model or "unknown"
        self.project_id = self.project_id or env_first(PROJECT_ID_ENV_VARS)
        self.host = self.host or env_first(HOST_ENV_VARS) or DEFAULT_HOST
        self.base_url = self.base_url or env_first(BASE_URL_ENV_VARS)
        _ = self._client  # bad numbers fail here
        return self

    @property
    def _client(self) -> EmbeddingsClient:
        self._client_cache = embeddings_client_for(self, self._client_cache)
        return self._client_cache[1]

    @property
    def batch_size(self) -> int:
        """Texts per request: `embed_batch_size`, under the name the core client reads."""
        return self.embed_batch_size

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises this class under."""
        return "TIREmbedding"

    # -- what BaseEmbedding calls ----------------------------------------------------------

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._client.embed_query(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await self._client.aembed_query(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._client.embed_documents([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._client.aembed_documents([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._client.embed_documents(texts)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._client.aembed_documents(texts)

    # -- batches in flight at once, one event per batch ------------------------------------

    def _own_batching(self, show_progress: bool) -> bool:
        # A cache, a rate limiter or a progress bar are BaseEmbedding's to run, batch by batch.
        return not (self.embeddings_cache or self.rate_limiter or show_progress)

    def _start_events(self, texts: list[str]) -> list[tuple[str, list[str]]]:
        model_dict = self.to_payload()
        size = self.embed_batch_size
        started = []
        for start in range(0, len(texts), size):
            dispatcher.event(EmbeddingStartEvent(model_dict=model_dict))
            event_id = self.callback_manager.on_event_start(
                CBEventType.EMBEDDING, payload={EventPayload.SERIALIZED: model_dict}
            )
            started.append((event_id, texts[start : start + size]))
        return started

    def _end_events(
        self, started: list[tuple[str, list[str]]], vectors: list[Embedding]
    ) -> list[Embedding]:
        offset = 0
        for event_id, batch in started:
            embeddings = vectors[offset : offset + len(batch)]
            offset += len(batch)
            dispatcher.event(EmbeddingEndEvent(chunks=batch, embeddings=embeddings))
            self.callback_manager.on_event_end(
                CBEventType.EMBEDDING,
                payload={EventPayload.CHUNKS: batch, EventPayload.EMBEDDINGS: embeddings},
                event_id=event_id,
            )
        return vectors

    @dispatcher.span
    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        """Embed texts: batches of `embed_batch_size`, up to `max_concurrency` at once."""
        if not self._own_batching(show_progress):
            return super().get_text_embedding_batch(texts, show_progress, **kwargs)
        started = self._start_events(texts)
        return self._end_events(started, self._client.embed_documents(texts))

    @dispatcher.span
    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        """Async twin of `get_text_embedding_batch`."""
        if not self._own_batching(show_progress):
            return await super().aget_text_embedding_batch(texts, show_progress, **kwargs)
        started = self._start_events(texts)
        return self._end_events(started, await self._client.aembed_documents(texts))
