"""The emulator with vLLM's rerank route (`POST .../rerank`), until it joins `emulator.py`.

`RerankEmulator` answers `/rerank` itself and hands every other request (chat, embeddings,
/models) to `Emulator`, so one server runs a whole RAG chain. Scores are word overlap between
query and document: deterministic, and meaningful enough that tests can assert the order (and
make ties on purpose). Replies are scripted with `RerankReply` (a `Reply` with the rerank
faults); `reply.status`, `body`, `headers`, `delay`, `no_usage`, `model` and
`hold_until_in_flight` mean what they mean for the other routes.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.support.emulator import Emulator, RecordedRequest, Reply, _dumps, _error_body

RERANK_MODEL = "bge_reranker_v2_m3"


def _words(text: str) -> set[str]:
    return {w.strip(".,;:!?\"'()").lower() for w in text.split()} - {""}


def rerank_score(query: str, document: str) -> float:
    """The share of the query's words that the document has: in [0, 1], ties easy to make."""
    wanted = _words(query)
    return round(len(wanted & _words(document)) / len(wanted), 6) if wanted else 0.0


def rerank_tokens(query: str, document: str) -> int:
    """Tokens the emulator counts for one pair: words of both plus three special tokens."""
    return len(query.split()) + len(document.split()) + 3


@dataclass
class RerankReply(Reply):
    """A scripted rerank reply: `Reply`'s knobs plus the ways a reply can fail to fit."""

    duplicate_index: bool = False  # the second result repeats the first one's index
    drop_result: bool = False  # one result fewer than asked for
    index_out_of_range: bool = False  # the last result names one past the last document
    bad_score: bool = False  # the first result's relevance_score becomes `score`
    score: Any = None  # (a str, null, NaN as a string ...)
    wrong_document: bool = False  # the first result quotes another document's text
    no_document: bool = False  # results without `document` (return_documents off)
    unsorted: bool = False  # results worst first (valid, but not in vLLM's order)
    ignore_top_n: bool = False  # every result, whatever top_n asked


class RerankEmulator(Emulator):
    """`Emulator` plus vLLM's `/v1/rerank`."""

    def __init__(self) -> None:
        super().__init__()
        self._rerank_queue: deque[Reply] = deque()
        self.rerank_delay = 0.0  # seconds before every rerank reply that sets none
        self.rerank_max_tokens: int | None = None  # the model's context, per pair

    def reset(self) -> None:
        super().reset()
        self._rerank_queue.clear()
        self.rerank_delay = 0.0
        self.rerank_max_tokens = None

    def queue_rerank(self, *replies: Reply) -> None:
        """Script the next rerank replies (a plain `Reply` for an error status)."""
        self._rerank_queue.extend(replies)

    def rerank_requests(self) -> list[RecordedRequest]:
        """The rerank requests received, in order."""
        return [r for r in self.requests if r.path.endswith("/rerank")]

    async def _respond(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        # The one override point: the base class records, counts and holds every request in
        # `_handle`, then asks `_respond` for the answer.
        if not request.path.endswith("/rerank"):
            return await super()._respond(request, writer)
        if request.method != "POST":
            await self._send(writer, 405, b'{"detail":"Method Not Allowed"}')
            return True
        authorization = request.headers.get("authorization")
        if self.require_key is not None and authorization != f"Bearer {self.require_key}":
            body = _error_body("nested", "Invalid API key", 401)
            await self._send(writer, 401, _dumps(body).encode())
            return True
        return await self._rerank(request, writer)

    async def _rerank(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        try:
            payload = json.loads(request.body)
        except ValueError:
            await self._send(writer, 400, _dumps(_error_body("flat", "bad JSON", 400)).encode())
            return True
        query, documents = payload.get("query"), payload.get("documents")
        if not isinstance(query, str) or not isinstance(documents, list):
            # As vLLM's request validation answers a body without them.
            message = "1 validation error for RerankRequest: query and documents are required"
            await self._send(writer, 400, _dumps(_error_body("flat", message, 400)).encode())
            return True
        texts = [d if isinstance(d, str) else str(d) for d in documents]
        counts = [rerank_tokens(query, t) for t in texts]
        truncate = payload.get("truncate_prompt_tokens")
        if self.rerank_max_tokens is not None and truncate is None:
            too_long = [c for c in counts if c > self.rerank_max_tokens]
            if too_long:
                message = (
                    f"This model's maximum context length is {self.rerank_max_tokens} tokens. "
                    f"However, you requested {too_long[0]} tokens in the input. Please reduce "
                    "the length of the input."
                )
                await self._send(writer, 400, _dumps(_error_body("flat", message, 400)).encode())
                return True
        reply = self._rerank_queue.popleft() if self._rerank_queue else RerankReply()
        await self._hold(reply)
        if reply.status >= 400 or reply.body is not None:
            body = reply.body or _error_body(reply.error_format, reply.message, reply.status)
            raw = body.encode() if isinstance(body, str) else _dumps(body).encode()
            ctype = "text/plain" if isinstance(body, str) else "application/json"
            await self._send(writer, reply.status, raw, ctype, reply.headers)
            return True
        delay = reply.delay or self.rerank_delay
        if delay:
            await asyncio.sleep(delay)
        fault = reply if isinstance(reply, RerankReply) else RerankReply()
        results = self._results(query, texts, payload.get("top_n"), fault)
        total = sum(counts)
        answer = {
            "id": f"rerank-{uuid.uuid4().hex}",
            "model": reply.model or payload.get("model") or RERANK_MODEL,
            "usage": None if reply.no_usage else {"total_tokens": total},
            "results": results,
        }
        await self._send(writer, 200, _dumps(answer).encode())
        return True

    @staticmethod
    def _results(
        query: str, texts: list[str], top_n: Any, fault: RerankReply
    ) -> list[dict[str, Any]]:
        # vLLM: sorted by score (a stable sort: ties in input order), cut to top_n when > 0.
        order = sorted(range(len(texts)), key=lambda i: -rerank_score(query, texts[i]))
        if isinstance(top_n, int) and top_n > 0 and not fault.ignore_top_n:
            order = order[:top_n]
        results: list[dict[str, Any]] = [
            {
                "index": i,
                "document": {"text": texts[i]},
                "relevance_score": rerank_score(query, texts[i]),
            }
            for i in order
        ]
        if fault.unsorted:
            results.reverse()
        if fault.no_document:
            for result in results:
                del result["document"]
        if fault.drop_result and results:
            results.pop()
        if fault.duplicate_index and len(results) > 1:
            results[1]["index"] = results[0]["index"]
        if fault.index_out_of_range and results:
            results[-1]["index"] = len(texts)
        if fault.bad_score and results:
            results[0]["relevance_score"] = fault.score
        if fault.wrong_document and len(texts) > 1 and results:
            other = (results[0]["index"] + 1) % len(texts)
            results[0]["document"] = {"text": texts[other]}
        return results


_shared: RerankEmulator | None = None


def shared_rerank_emulator() -> Iterator[RerankEmulator]:
    """One server for the whole session, reset before and after each test (a fixture body).

    Test modules make it a fixture in one line: `yield from shared_rerank_emulator()`.
    """
    global _shared
    server = _shared
    if server is None:
        server = RerankEmulator()
        server.start()
        atexit.register(server.stop)
        _shared = server
    server.reset()
    try:
        yield server
    finally:
        server.reset()
