"""`TIRRerank`: E2E Networks TIR rerank models as a LangChain document compressor."""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document

from tir_transport import RerankClient, RerankResult, TIRRerankConnection

from ._errors import langchain_errors

__all__ = ["TIRRerank"]


def _texts(documents: Sequence[str | Document]) -> list[str]:
    # Anything else goes through as it is: the core names its index in the error.
    return [d.page_content if isinstance(d, Document) else d for d in documents]


class TIRRerank(TIRRerankConnection, BaseDocumentCompressor):
    """Reranks documents with an E2E Networks TIR rerank model (a cross-encoder).

    Setup:
        `pip install "tir-llama[langchain]"`, then set `TIR_API_KEY`, `TIR_PROJECT_ID` and
        `TIR_RERANK_MODEL` (the model's API name on its page in TIR), or pass them.

    Example:
        ```python
        from langchain_classic.retrievers import ContextualCompressionRetriever
        from langchain_tir import TIRRerank

        retriever = ContextualCompressionRetriever(
            base_compressor=TIRRerank(top_n=3),  # model from TIR_RERANK_MODEL
            base_retriever=store.as_retriever(search_kwargs={"k": 12}),
        )
        retriever.invoke("Where does TIR run?")
        ```

    `compress_documents` returns the best `top_n` as new `Document`s (same content, id and a
    copy of the metadata, plus `metadata["relevance_score"]`); the documents given are never
    changed. More than `batch_size` documents go in several requests, up to `max_concurrency`
    at once, merged into one order by score (ties in input order).
    """

    @property
    def _client(self) -> RerankClient:
        return self.rerank_client()

    def rerank(self, query: str, documents: Sequence[str | Document]) -> list[tuple[int, float]]:
        """Score every document against `query`: `(index, relevance_score)`, best first.

        Indices are positions in `documents`; ties keep input order. Every document is
        returned (`top_n` applies to `compress_documents` only).

        Raises:
            InputError: the query or a document is empty or not text (nothing is sent).
            InvalidResponseError: a reply that does not fit the documents sent.
        """
        with langchain_errors():
            return _pairs(self._client.rerank(query, _texts(documents)))

    async def arerank(
        self, query: str, documents: Sequence[str | Document]
    ) -> list[tuple[int, float]]:
        """Async twin of `rerank`, natively async."""
        with langchain_errors():
            return _pairs(await self._client.arerank(query, _texts(documents)))

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """The best `top_n` documents for `query`, best first, as new documents.

        Args:
            documents: the retrieved documents (not changed).
            query: the question.
            callbacks: accepted for the interface; the retriever that calls this reports
                the run.

        Returns:
            Up to `top_n` documents; none (and no request) for none given.

        Raises:
            InputError: a document with empty content (nothing is sent).
        """
        with langchain_errors():
            results = self._client.rerank(query, _texts(documents), top_n=self.top_n)
        return _ranked(documents, results)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Async twin of `compress_documents`, natively async (no thread pool)."""
        with langchain_errors():
            results = await self._client.arerank(query, _texts(documents), top_n=self.top_n)
        return _ranked(documents, results)


def _pairs(results: list[RerankResult]) -> list[tuple[int, float]]:
    return [(r.index, r.relevance_score) for r in results]


def _ranked(documents: Sequence[Document], results: list[RerankResult]) -> list[Document]:
    ranked = []
    for result in results:
        source = documents[result.index]
        # A deep copy: a caller's nested metadata (a list of tags) must not change under it.
        metadata = deepcopy(source.metadata)
        metadata["relevance_score"] = result.relevance_score
        ranked.append(Document(page_content=source.page_content, metadata=metadata, id=source.id))
    return ranked
