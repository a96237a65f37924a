"""The rerank API as vLLM speaks it (Jina/Cohere style), over the shared HTTP layer.

The pure part (check the documents, build a payload, read a reply, merge batches) comes first;
`RerankClient` only builds requests and reads replies: sending, retries, limits and errors are
`HTTPClient`'s. A cross-encoder scores each (query, document) pair on its own, so the scores of
several requests can be merged into one order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Unpack

import httpx

from .._config import RERANK_MODEL_ENV_VARS, RERANK_MODEL_HINT, TIRConfig
from .._errors import (
    ContextLengthExceededError,
    InputError,
    InvalidResponseError,
    quote,
    scrub_secret,
)
from .._http import HTTPClient, HTTPOptions, ain_flight, check_batching, in_flight
from .._usage import Usage

__all__ = [
    "DEFAULT_RERANK_BATCH_SIZE",
    "DEFAULT_RERANK_CONCURRENCY",
    "DEFAULT_RERANK_TOP_N",
    "RerankClient",
    "RerankReply",
    "RerankResult",
    "build_rerank_payload",
    "check_documents",
    "merge_results",
    "parse_rerank",
]

DEFAULT_RERANK_TOP_N = 3
# A cross-encoder reads query + document for every pair: 32 pairs keep a request's work (and
# its latency) modest and give a few hundred retrieved chunks enough requests to overlap.
DEFAULT_RERANK_BATCH_SIZE = 32
DEFAULT_RERANK_CONCURRENCY = 8

_T = TypeVar("_T")


# -- pure --------------------------------------------------------------------------------------


def check_documents(query: Any, documents: Sequence[Any]) -> None:
    """Refuse what no reranker scores meaningfully, naming the caller's index.

    An empty document would be scored like any other (a cross-encoder gives the pair a number
    all the same) and could outrank real passages; anything but a str is a caller's mistake.

    Raises:
        InputError: the query is not a str or is blank; a document is not a str, or is blank.
    """
    if not isinstance(query, str):
        raise InputError(f"the query is a {type(query).__name__}, not a str")
    if not query.strip():
        raise InputError("the query is empty or blank: there is nothing to rank against")
    if isinstance(documents, str):
        raise InputError("documents must be a list of texts, not one str")
    for index, text in enumerate(documents):
        if not isinstance(text, str):
            raise InputError(
                f"document {index} is a {type(text).__name__}, not a str: rerank strings only"
            )
        if not text.strip():
            raise InputError(
                f"document {index} is empty or blank: a score for it means nothing. Drop empty "
                "documents before reranking (e.g. `[d for d in docs if d.strip()]`)."
            )


# What a blank document scores when the adapters rank it without sending it: the floor of
# vLLM's rerank scores (a cross-encoder's logit through a sigmoid), so it sorts with the rest.
BLANK_SCORE = 0.0


def split_blank(documents: Sequence[Any]) -> tuple[list[int], list[int]]:
    """The positions of the documents to send, and of the blank ones (whitespace only).

    Anything but a str goes with those to send, for `check_documents` to name.
    """
    sent: list[int] = []
    blank: list[int] = []
    for index, text in enumerate(documents):
        (blank if isinstance(text, str) and not text.strip() else sent).append(index)
    return sent, blank


def place_blank_last(
    results: Sequence[RerankResult], sent: Sequence[int], blank: Sequence[int], top_n: int | None
) -> list[RerankResult]:
    """The results of the documents sent, in the caller's indices, then the blank ones.

    Blank documents come after every scored one, in input order, scored `BLANK_SCORE`.
    """
    ranked = [RerankResult(sent[r.index], r.relevance_score) for r in results]
    ranked += [RerankResult(index, BLANK_SCORE) for index in blank]
    return ranked if top_n is None else ranked[:top_n]


def build_rerank_payload(
    query: str,
    documents: Sequence[str],
    model: str,
    *,
    top_n: int | None = None,
    truncate_prompt_tokens: int | None = None,
    extra_body: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of one rerank request; only what is set is sent.

    Args:
        query: the question the documents are ranked against.
        documents: the documents of this request (one batch).
        model: the model's API name.
        top_n: how many results the server returns (all when None).
        truncate_prompt_tokens: vLLM's opt-in to cut each pair to this many tokens.
        extra_body: other fields, merged in last.
    """
    payload: dict[str, Any] = {"model": model, "query": query, "documents": list(documents)}
    if top_n is not None:
        payload["top_n"] = top_n
    if truncate_prompt_tokens is not None:
        payload["truncate_prompt_tokens"] = truncate_prompt_tokens
    if extra_body:
        payload.update(extra_body)
    return payload


@dataclass(frozen=True, slots=True)
class RerankResult:
    """One document's place: its index in the list given, and the model's relevance score."""

    index: int
    relevance_score: float


@dataclass(frozen=True, slots=True)
class RerankReply:
    """The results of one request (indices into its batch, best first) and what came with them."""

    results: list[RerankResult]
    model: str | None
    usage: Usage | None


def _bad(message: str, data: Any, secret: str | None) -> InvalidResponseError:
    # A gateway may echo the request's headers back: the quote never shows the key.
    return InvalidResponseError(
        f"{scrub_secret(message, secret)}; the reply began: "
        f"{quote(scrub_secret(repr(data), secret), 200)}"
    )


def _score(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    score = float(value)
    return score if math.isfinite(score) else None


def _document_text(item: Mapping[str, Any]) -> str | None:
    document = item.get("document")
    if isinstance(document, Mapping):
        text = document.get("text")
        return text if isinstance(text, str) else None
    return document if isinstance(document, str) else None


def parse_rerank(
    data: Any,
    documents: Sequence[str],
    *,
    top_n: int | None = None,
    secret: str | None = None,
) -> RerankReply:
    """Read a rerank reply to a request that sent `documents`: results best first.

    Raises:
        InvalidResponseError: not the rerank format; fewer results than asked (all, or
            `top_n`); an index repeated or out of range; a score that is not a finite
            number; a document text that is not the one sent under that index. Never a
            shorter list or a result under the wrong document.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("results"), list):
        raise _bad("the reply is not a rerank result list (no 'results' array)", data, secret)
    items: list[Any] = data["results"]
    count = len(documents)
    wanted = count if top_n is None else min(top_n, count)
    if not wanted <= len(items) <= count:
        asked = "all of them" if top_n is None else f"top_n={top_n}"
        raise _bad(
            f"the server sent {len(items)} results for {count} documents ({asked})", data, secret
        )
    seen: set[int] = set()
    results: list[RerankResult] = []
    for item in items:
        if not isinstance(item, Mapping):
            raise _bad("a result is not an object", item, secret)
        index = item.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            complaint = f"a result has no valid index ({index!r}) for {count} documents"
            raise _bad(complaint, item, secret)
        if index in seen:
            raise _bad(f"two results have index {index}", item, secret)
        seen.add(index)
        score = _score(item.get("relevance_score"))
        if score is None:
            complaint = f"the result for document {index} has no numeric relevance_score"
            raise _bad(complaint, item, secret)
        text = _document_text(item)
        if text is not None and text != documents[index]:
            raise _bad(f"the result for document {index} quotes another document", item, secret)
        results.append(RerankResult(index, score))
    # The server sorts; sorting again costs little and keeps ties in input order.
    results.sort(key=lambda r: (-r.relevance_score, r.index))
    usage = data.get("usage")
    total = usage.get("total_tokens") if isinstance(usage, Mapping) else None
    model = data.get("model")
    return RerankReply(
        results,
        model if isinstance(model, str) else None,
        # A cross-encoder only reads: every token of the pairs is input.
        Usage(int(total), 0, int(total)) if isinstance(total, int) else None,
    )


def merge_results(
    batches: Sequence[tuple[int, Sequence[RerankResult]]], top_n: int | None
) -> list[RerankResult]:
    """One order over every batch: each index moved by its batch's start, best first.

    Ties keep input order (the smaller index first); `top_n` cuts after the merge.
    """
    merged = [
        RerankResult(start + r.index, r.relevance_score)
        for start, results in batches
        for r in results
    ]
    merged.sort(key=lambda r: (-r.relevance_score, r.index))
    return merged if top_n is None else merged[:top_n]


# -- the client --------------------------------------------------------------------------------


class RerankClient(HTTPClient):
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
            **options: `retry`, `limits`, `http_client`, `http_async_client` (see
                `HTTPClient`).

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

    def _reply(
        self, response: httpx.Response, documents: list[str], top_n: int | None
    ) -> list[RerankResult]:
        def parse(data: Any) -> RerankReply:
            return parse_rerank(data, documents, top_n=top_n)

        return self._read(response, parse, self.config.model).results

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
        return located

    def _send(
        self, query: str, start: int, documents: list[str], top_n: int | None, total: int
    ) -> tuple[int, list[RerankResult]]:
        url = self._api_url("rerank", None)
        try:
            response = self._request(url, self._body(query, documents, top_n), self.config.model)
        except ContextLengthExceededError as e:
            raise self._located(e, start, len(documents), total) from e
        return start, self._reply(response, documents, top_n)

    async def _asend(
        self, query: str, start: int, documents: list[str], top_n: int | None, total: int
    ) -> tuple[int, list[RerankResult]]:
        url = self._api_url("rerank", None)
        try:
            response = await self._arequest(
                url, self._body(query, documents, top_n), self.config.model
            )
        except ContextLengthExceededError as e:
            raise self._located(e, start, len(documents), total) from e
        return start, self._reply(response, documents, top_n)

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
                scored = self.rerank(query, kept, top_n=top_n) if kept else []
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
                scored = await self.arerank(query, kept, top_n=top_n) if kept else []
                return place_blank_last(scored, sent, blanks, top_n)
        batches = self._batches(query, documents, top_n)
        total = len(documents)
        results = await ain_flight(
            lambda job: self._asend(query, *job, top_n, total), batches, self.max_concurrency
        )
        return merge_results(results, top_n)
