"""`TIREmbeddings`: E2E Networks TIR embedding models as LangChain embeddings."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings
from pydantic import AliasChoices, Field

from tir_transport import DEFAULT_EMBED_BATCH_SIZE, EmbeddingsClient, TIREmbeddingsConnection

from ._errors import langchain_errors

__all__ = ["TIREmbeddings"]


class TIREmbeddings(TIREmbeddingsConnection, Embeddings):
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

    batch_size: int = Field(
        default=DEFAULT_EMBED_BATCH_SIZE,
        ge=1,
        validation_alias=AliasChoices("batch_size", "chunk_size"),
    )
    """Texts per request (also taken as OpenAIEmbeddings' `chunk_size`)."""

    @property
    def _client(self) -> EmbeddingsClient:
        return self.embeddings_client(self.batch_size)

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
