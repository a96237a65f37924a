"""`TIRRerank`: E2E Networks TIR rerank models as a LangChain document compressor."""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document

from tir_transport import InputError, RerankClient, RerankResult, TIRRerankConnection

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
    at once, merged into one order by score (ties in input order). A blank document (empty
    or whitespace) is not sent: it comes after every scored one, in input order, with
    `relevance_score` 0.0 (as `llama_index_tir.TIRRerank` places a blank node). `top_n=0`
    keeps none, and sends nothing.
    """

    @property
    def _client(self) -> RerankClient:
        return self.rerank_client()

    def rerank(
        self,
        documents: Sequence[str | Document] | str,
        query: str | Sequence[str | Document],
        *,
        model: str | None = None,
        top_n: int | None = -1,
        max_chunks_per_doc: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rank documents by relevance to `query`, as `CohereRerank.rerank` does.

        Args:
            documents: texts or `Document`s (a list: one string is refused, not ranked by
                its characters).
            query: the question. (The older order, `rerank(query, documents)`, is taken too,
                and then ranks every document unless `top_n` says otherwise.)
            model: taken as Cohere's is, but it must be this reranker's model (a client
                serves one model); None for that.
            top_n: how many (the best): -1 for this reranker's `top_n`, None for all, 0 for
                none (Cohere's reranker would give its own `top_n` for 0).
            max_chunks_per_doc: Cohere's; only None is taken (TIR's models score each
                document whole).

        Returns:
            `{"index", "relevance_score"}` dicts, best first; `index` is the position in
            `documents`, ties keep input order. A blank document comes last, scored 0.0.

        Raises:
            InputError: the query is empty, the documents are one string, a document is not
                text, `model` is another model, or `max_chunks_per_doc` is set (nothing is
                sent).
            InvalidResponseError: a reply that does not fit the documents sent.
        """
        texts, question, wanted = self._arguments(
            documents, query, top_n, model, max_chunks_per_doc
        )
        if not texts or wanted == 0:
            return []
        with langchain_errors():
            return _dicts(self._client.rerank(question, texts, top_n=wanted, blank="last"))

    async def arerank(
        self,
        documents: Sequence[str | Document] | str,
        query: str | Sequence[str | Document],
        *,
        model: str | None = None,
        top_n: int | None = -1,
        max_chunks_per_doc: int | None = None,
    ) -> list[dict[str, Any]]:
        """Async twin of `rerank`, natively async."""
        texts, question, wanted = self._arguments(
            documents, query, top_n, model, max_chunks_per_doc
        )
        if not texts or wanted == 0:
            return []
        with langchain_errors():
            results = await self._client.arerank(question, texts, top_n=wanted, blank="last")
        return _dicts(results)

    def _arguments(
        self,
        documents: Any,
        query: Any,
        top_n: int | None,
        model: str | None,
        max_chunks_per_doc: int | None,
    ) -> tuple[list[Any], Any, int | None]:
        if max_chunks_per_doc is not None:
            raise InputError(
                f"max_chunks_per_doc={max_chunks_per_doc!r} is Cohere's: TIR's rerank models "
                "score each document whole (a long one is cut at the model's window); split "
                "long documents before ranking, and leave max_chunks_per_doc unset"
            )
        if isinstance(documents, str) and not isinstance(query, str):
            # rerank(query, documents), this class's first signature: every document.
            documents, query = query, documents
            top_n = None if top_n == -1 else top_n
        elif isinstance(documents, str):
            raise InputError(
                "documents is one string: pass a list of texts or Documents "
                f"(rerank([{documents[:40]!r}], query)); a string would be ranked by character"
            )
        elif top_n == -1:
            top_n = self.top_n  # Cohere's default: the instance's
        if top_n is not None and top_n < 0:
            raise InputError(f"top_n must be -1, None or at least 0, got {top_n}")
        if model is not None and documents and model != self._client.config.model:
            raise InputError(
                f"model={model!r}, but this reranker serves {self._client.config.model!r}: "
                "make a TIRRerank(model=...) for another model"
            )
        return _texts(documents), query, top_n

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
            Up to `top_n` documents; none (and no request) for none given or `top_n=0`.
            A blank document is not sent; it comes after every scored one, scored 0.0.

        Raises:
            InputError: the query is empty (nothing is sent).
        """
        if not documents or self.top_n == 0:
            return []  # before the client: no settings are needed to rank nothing
        with langchain_errors():
            results = self._client.rerank(query, _texts(documents), top_n=self.top_n, blank="last")
        return _ranked(documents, results)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Async twin of `compress_documents`, natively async (no thread pool)."""
        if not documents or self.top_n == 0:
            return []
        with langchain_errors():
            results = await self._client.arerank(
                query, _texts(documents), top_n=self.top_n, blank="last"
            )
        return _ranked(documents, results)


def _dicts(results: list[RerankResult]) -> list[dict[str, Any]]:
    return [{"index": r.index, "relevance_score": r.relevance_score} for r in results]


def _ranked(documents: Sequence[Document], results: list[RerankResult]) -> list[Document]:
    ranked = []
    for result in results:
        source = documents[result.index]
        # A deep copy: a caller's nested metadata (a list of tags) must not change under it.
        metadata = deepcopy(source.metadata)
        metadata["relevance_score"] = result.relevance_score
        ranked.append(Document(page_content=source.page_content, metadata=metadata, id=source.id))
    return ranked
