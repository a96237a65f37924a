"""`TIREmbedding`: E2E Networks TIR embedding models as a LlamaIndex embedding model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import llama_index.core.instrumentation as instrument
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, model_validator
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation.events.embedding import (
    EmbeddingEndEvent,
    EmbeddingStartEvent,
)

from tir_transport import DEFAULT_EMBED_BATCH_SIZE, EmbeddingsClient, TIREmbeddingsConnection

__all__ = ["TIREmbedding"]

# llama_index.core re-exports it without listing it in __all__.
dispatcher = instrument.get_dispatcher(__name__)  # type: ignore[attr-defined]


class TIREmbedding(TIREmbeddingsConnection, BaseEmbedding):
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

    embed_batch_size: int = Field(
        default=DEFAULT_EMBED_BATCH_SIZE, gt=0, le=2048, description="Texts per request."
    )

    @model_validator(mode="before")
    @classmethod
    def _model_name_is_the_model(cls, values: Any) -> Any:
        # OpenAILikeEmbedding(model_name=...) names the model: so does ours. (to_dict gives
        # both names, the same model; given different, the user meant one of them.)
        if not isinstance(values, dict) or values.get("model_name") is None:
            return values
        if "model" not in values:
            return {**values, "model": values["model_name"]}
        if values["model"] is not None and values["model"] != values["model_name"]:
            raise ValueError(
                "'model' is given twice, as 'model' and as 'model_name' (LlamaIndex's name "
                "for it), with different values: give it once"
            )
        return values

    @model_validator(mode="after")
    def _check_config(self) -> TIREmbedding:
        self.model_name = self.model or "unknown"  # LlamaIndex's name for it
        return self

    @property
    def _client(self) -> EmbeddingsClient:
        return self.embeddings_client(self.embed_batch_size)

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

    def _own_batching(self) -> bool:
        # A cache or a rate limiter are BaseEmbedding's to run, batch by batch.
        return not (self.embeddings_cache or self.rate_limiter)

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
        """Embed texts: batches of `embed_batch_size`, up to `max_concurrency` at once.

        `show_progress`: a progress bar over the texts, moved as each batch comes back (the
        batches still go out at once; LlamaIndex's own bar sent them one by one).
        """
        if not self._own_batching():
            return super().get_text_embedding_batch(texts, show_progress, **kwargs)
        started = self._start_events(texts)
        client = self._client
        with _bar(len(texts), show_progress) as bar:
            vectors = client.embed(texts, prefix=client.document_prefix, progress=bar)
        return self._end_events(started, vectors)

    @dispatcher.span
    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        """Async twin of `get_text_embedding_batch`."""
        if not self._own_batching():
            return await super().aget_text_embedding_batch(texts, show_progress, **kwargs)
        started = self._start_events(texts)
        client = self._client
        with _bar(len(texts), show_progress) as bar:
            vectors = await client.aembed(texts, prefix=client.document_prefix, progress=bar)
        return self._end_events(started, vectors)


@contextmanager
def _bar(total: int, show: bool) -> Iterator[Callable[[int], object] | None]:
    """A progress bar's `update` (LlamaIndex's words and tqdm), or None when not shown."""
    if not show:
        yield None
        return
    from tqdm.auto import tqdm  # type: ignore[import-untyped]  # as LlamaIndex's own bar

    with tqdm(total=total, desc="Generating embeddings") as bar:
        yield bar.update
