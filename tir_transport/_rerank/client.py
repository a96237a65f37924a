"""The rerank client over the shared transport.

`RerankClient` only builds requests and reads replies (with `wire`): sending, retries, limits
and errors are its `Transport`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Literal, Unpack

from .._config import RERANK_MODEL_ENV_VARS, RERANK_MODEL_HINT, TIRConfig
from .._errors import ContextLengthExceededError
from .._transport import APIClient, HTTPOptions, ain_flight, check_batching, in_flight
from .wire import (
    RerankReply,
    RerankResult,
    build_rerank_payload,
    check_documents,
    merge_results,
    parse_rerank,
    place_blank_last,
    split_blank,
)

__all__ = [
    "DEFAULT_RERANK_BATCH_SIZE",
    "DEFAULT_RERANK_CONCURRENCY",
    "DEFAULT_RERANK_TOP_N",
    "RerankClient",
]

DEFAULT_RERANK_TOP_N = 3
# A cross-encoder reads query + document for every pair: 32 pairs keep a request's work (and
# its latency) modest and give a few hundred retrieved chunks enough requests to overlap.
DEFAULT_RERANK_BATCH_SIZE = 32
DEFAULT_RERANK_CONCURRENCY = 8


class RerankClient(APIClient):
    """Reranks documents against a query for one configuration, sync or async.

    Any number of documents: batches of `batch_size` go out up to `max_concurrency` at a time
    and their results are merged into one order. `config.model` is the rerank model's API name
    (TIR has no default); build with `RerankClient.from_env(...)` to read `TIR_RERANK_MODEL`.
    """

    model_env_vars = RERANK_MODEL_ENV_VARS

    def __init__(
        self,
        config: TIRConfig,
        *,
        batch_size: int = DEFAULT_RERANK_BATCH_SIZE,
        max_concurrency: int = DEFAULT_RERANK_CONCURRENCY,
        truncate_prompt_tokens: int | None = None,
        **options: Unpack[HTTPOptions],
    ) -> None:
        """Create a client; no I/O happens here.

        Args:
            config: where and how to connect; `config.model` is the rerank model.
            batch_size: documents per request.
            max_concurrency: requests in flight at once for one call (threads, for sync).
            truncate_prompt_tokens: let the server (vLLM) cut each (query, document) pair to
                this many tokens instead of failing on one too long for the model.
            **options: `transport`, or `retry`, `limits`, `http_client`, `http_async_client`
                (see `APIClient`).

        Raises:
            ValueError: a batch size or concurrency below 1.
        """
        check_batching(batch_size, max_concurrency)
        super().__init__(config, **options)
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.truncate_prompt_tokens = truncate_prompt_tokens

    # -- pure steps ------------------------------------------------------------------------

    def _batches(
        self, query: str, documents: Sequence[str], top_n: int | None
    ) -> list[tuple[int, list[str]]]:
        """(start index, documents) per request; everything is checked before anything is sent."""
        if top_n is not None and (isinstance(top_n, bool) or top_n < 1):
            raise ValueError(f"top_n must be at least 1 (or None for all), got {top_n!r}")
        self.config.require(model_hint=RERANK_MODEL_HINT)
        check_documents(query, documents)
        size = self.batch_size
        return [
            (start, list(documents[start : start + size]))
            for start in range(0, len(documents), size)
        ]

    def _body(self, query: str, documents: list[str], top_n: int | None) -> bytes:
        payload = build_rerank_payload(
            query,
            documents,
            self.config.model,
            top_n=top_n,
            truncate_prompt_tokens=self.truncate_prompt_tokens,
        )
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    def _post(
        self, query: str, documents: list[str], top_n: int | None
    ) -> tuple[str, bytes, Callable[[Any], RerankReply], str]:
        def parse(data: Any) -> RerankReply:
            return parse_rerank(data, documents, top_n=top_n)

        url = self._url_of("rerank")
        return url, self._body(query, documents, top_n), parse, self.config.model

    @staticmethod
    def _located(
        error: ContextLengthExceededError, start: int, size: int, total: int
    ) -> ContextLengthExceededError:
        """A too-long pair, said with the documents it is among (the server names none)."""
        located = ContextLengthExceededError(
            f"a document among {start}..{start + size - 1} (of the {total} given, counting "
            "from 0) is too long for the model together with the query: shorten or split it, "
            "or pass truncate_prompt_tokens=... to let the server cut it. The server said: "
            f"{error.message}",
            status_code=error.status_code,
            request_id=error.request_id,
            body=error.body,
        )
        located.retry_after = error.retry_after
        located.__dict__["_span"] = (start, start + size - 1)  # for `_relocated`
        return located

    def _relocated(
        self, error: ContextLengthExceededError, sent: Sequence[int], total: int
    ) -> ContextLengthExceededError:
        """A too-long pair found among the documents sent, said in the caller's indices.

        (With blank documents left out, the batches count the documents sent, not those
        given: "among 1..1 of the 2 given" was the third of four.)
        """
        span = error.__dict__.get("_span")
        cause = error.__cause__
        if span is None or not isinstance(cause, ContextLengthExceededError):
            return error
        first, last = sent[span[0]], sent[span[1]]
        return self._located(cause, first, last - first + 1, total)

    def _send(
        self, query: str, start: int, documents: list[str], top_n: int | None, total: int
    ) -> tuple[int, list[RerankResult]]:
        try:
            reply: RerankReply = self.transport.post(*self._post(query, documents, top_n))
        except ContextLengthExceededError as e:
            raise self._located(e, start, len(documents), total) from e
        return start, reply.results

    async def _asend(
        self, query: str, start: int, documents: list[str], top_n: int | None, total: int
    ) -> tuple[int, list[RerankResult]]:
        try:
            reply: RerankReply = await self.transport.apost(*self._post(query, documents, top_n))
        except ContextLengthExceededError as e:
            raise self._located(e, start, len(documents), total) from e
        return start, reply.results

    # -- sync and async --------------------------------------------------------------------

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        blank: Literal["refuse", "last"] = "refuse",
    ) -> list[RerankResult]:
        """Rank `documents` by relevance to `query`, best first.

        Every batch asks the server for its best `top_n` only: the best `top_n` of all are
        among them (and the server's ties keep input order, as the merge's do).

        Args:
            query: the question.
            documents: the texts; none may be empty. Results name them by index in this list.
            top_n: how many results (the best); all when None.
            blank: what a blank document does: `"refuse"` raises `InputError`; `"last"`
                (the adapters', whose callers cannot filter what a retriever gives) is not
                sent and comes after every scored document, in input order, scored
                `BLANK_SCORE` (0.0).

        Returns:
            Up to `top_n` results, best first; ties in input order.

        Raises:
            InputError: the query or a document is empty or not a str (nothing is sent).
            InvalidResponseError: a reply that does not fit the documents sent.
            TIRError: any other failure, after the retries the policy allows.
        """
        if blank == "last":
            sent, blanks = split_blank(documents)
            if blanks:
                check_documents(query, [])
                kept = [documents[i] for i in sent]
                try:
                    scored = self.rerank(query, kept, top_n=top_n) if kept else []
                except ContextLengthExceededError as e:
                    raise self._relocated(e, sent, len(documents)) from e.__cause__
                return place_blank_last(scored, sent, blanks, top_n)
        batches = self._batches(query, documents, top_n)
        total = len(documents)
        results = in_flight(
            lambda job: self._send(query, *job, top_n, total),
            batches,
            self.max_concurrency,
            "tir-rerank",
        )
        return merge_results(results, top_n)

    async def arerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        blank: Literal["refuse", "last"] = "refuse",
    ) -> list[RerankResult]:
        """Async twin of `rerank`: batches go out up to `max_concurrency` at a time."""
        if blank == "last":
            sent, blanks = split_blank(documents)
            if blanks:
                check_documents(query, [])
                kept = [documents[i] for i in sent]
                try:
                    scored = await self.arerank(query, kept, top_n=top_n) if kept else []
                except ContextLengthExceededError as e:
                    raise self._relocated(e, sent, len(documents)) from e.__cause__
                return place_blank_last(scored, sent, blanks, top_n)
        batches = self._batches(query, documents, top_n)
        total = len(documents)
        results = await ain_flight(
            lambda job: self._asend(query, *job, top_n, total), batches, self.max_concurrency
        )
        return merge_results(results, top_n)
