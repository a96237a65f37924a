"""The rerank API's wire format as vLLM speaks it (Jina/Cohere style), without I/O.

Check the documents, build a payload, read a reply, merge batches; the client is in `client`.
A cross-encoder scores each (query, document) pair on its own, so the scores of several
requests can be merged into one order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import InputError, InvalidResponseError, check_texts, quote
from .._secrets import scrub_secret
from .._usage import Usage

__all__ = [
    "RerankReply",
    "RerankResult",
    "build_rerank_payload",
    "check_documents",
    "merge_results",
    "parse_rerank",
]


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
    check_texts(
        documents,
        "document",
        "rerank",
        "a score for it means nothing",
        "[d for d in docs if d.strip()]",
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
    optional = {"top_n": top_n, "truncate_prompt_tokens": truncate_prompt_tokens}
    payload.update((name, value) for name, value in optional.items() if value is not None)
    payload.update(extra_body or {})
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
