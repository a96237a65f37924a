"""`TIRRerank`: E2E Networks TIR rerank models as a LlamaIndex node postprocessor."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import llama_index.core.instrumentation as instrument
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from tir_transport import RerankClient, RerankResult, TIRRerankConnection

__all__ = ["TIRRerank"]

# llama_index.core re-exports it without listing it in __all__.
dispatcher = instrument.get_dispatcher(__name__)  # type: ignore[attr-defined]


class TIRRerank(TIRRerankConnection, BaseNodePostprocessor):
    """Reranks retrieved nodes with an E2E Networks TIR rerank model (a cross-encoder).

    Example:
        ```python
        from llama_index_tir import TIRRerank

        # reads TIR_API_KEY, TIR_PROJECT_ID and TIR_RERANK_MODEL
        engine = index.as_query_engine(
            similarity_top_k=12, node_postprocessors=[TIRRerank(top_n=3)]
        )
        ```

    Returns the best `top_n` nodes as new `NodeWithScore`s whose score is the model's relevance
    score (the nodes given keep theirs). A node is scored on its content as embedded
    (`MetadataMode.EMBED`), as LlamaIndex's other rerankers do. More than `batch_size` nodes
    go in several requests, up to `max_concurrency` at once, merged into one order by score
    (ties in input order). A blank node (no text, such as an image node) is not sent: it
    comes after every scored one, in input order, with score 0.0 (as
    `langchain_tir.TIRRerank` places a blank document); `top_n=0` keeps none and sends
    nothing. The rerank callback event (`CBEventType.RERANKING`) and the
    instrumentation events (`ReRankStartEvent`, `ReRankEndEvent`) fire once per call.
    """

    @property
    def _client(self) -> RerankClient:
        return self.rerank_client()

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises this class under."""
        return "TIRRerank"

    @contextmanager
    def _events(
        self, nodes: list[NodeWithScore], query: QueryBundle | None
    ) -> Iterator[tuple[str, list[NodeWithScore]]]:
        """Fire the start events, yield (query, out list), fire the end events with its nodes."""
        model = self.model or "unknown"
        top_n = len(nodes) if self.top_n is None else self.top_n
        dispatcher.event(ReRankStartEvent(query=query, nodes=nodes, top_n=top_n, model_name=model))
        if query is None:
            raise ValueError(
                "TIRRerank needs the query: postprocess_nodes(nodes, query_str=...) (a query "
                "engine passes it by itself)"
            )
        ranked: list[NodeWithScore] = []
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: model,
                EventPayload.QUERY_STR: query.query_str,
                EventPayload.TOP_K: top_n,
            },
        ) as event:
            yield query.query_str, ranked
            event.on_end(payload={EventPayload.NODES: ranked})
        dispatcher.event(ReRankEndEvent(nodes=ranked))

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        with self._events(nodes, query_bundle) as (query, ranked):
            if nodes and self.top_n != 0:
                results = self._client.rerank(query, _texts(nodes), top_n=self.top_n, blank="last")
                ranked.extend(_ranked(nodes, results))
        return ranked

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        # Natively async: BaseNodePostprocessor's default runs the sync method in a thread.
        with self._events(nodes, query_bundle) as (query, ranked):
            if nodes and self.top_n != 0:
                results = await self._client.arerank(
                    query, _texts(nodes), top_n=self.top_n, blank="last"
                )
                ranked.extend(_ranked(nodes, results))
        return ranked


def _texts(nodes: list[NodeWithScore]) -> list[Any]:
    return [_text(n) for n in nodes]


def _text(node: NodeWithScore) -> Any:
    text = node.node.get_content(metadata_mode=MetadataMode.EMBED)
    # A node whose content is blank (an image node, an empty chunk) is blank even when its
    # metadata makes the embed text something ("file_path: cat.png"): scored, that text
    # outranked real passages; it goes last, as LangChain's blank document does.
    # (Only a node with metadata can differ: the others' embed text is their content.)
    if node.node.metadata and not node.node.get_content(metadata_mode=MetadataMode.NONE).strip():
        return ""
    return text


def _ranked(nodes: list[NodeWithScore], results: list[RerankResult]) -> list[NodeWithScore]:
    # New NodeWithScore objects around the same nodes: the caller's list keeps its scores.
    return [NodeWithScore(node=nodes[r.index].node, score=r.relevance_score) for r in results]
