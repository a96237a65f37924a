"""The rerank route (`/rerank`): word-overlap scores, so that tests know the order."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from tests.support.emulator.faults import RerankReply
from tests.support.emulator.server import Server
from tests.support.emulator.wire import RecordedRequest, _dumps, _error_body

RERANK_MODEL = "bge_reranker_v2_m3"


def _words(text: str) -> set[str]:
    return {w.strip(".,;:!?\"'()").lower() for w in text.split()} - {""}


def rerank_score(query: str, document: str) -> float:
    """The share of the query's words that the document has: in [0, 1], ties easy to make."""
    wanted = _words(query)
    return round(len(wanted & _words(document)) / len(wanted), 6) if wanted else 0.0


def rerank_tokens(query: str, document: str) -> int:
    """Tokens the emulator counts for one rerank pair: words of both plus three special tokens."""
    return len(query.split()) + len(document.split()) + 3


class RerankRoute(Server):
    """vLLM's rerank API, with the ways a reply can fail to fit (`RerankReply`)."""

    async def _rerank(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        """vLLM's /v1/rerank: word-overlap scores, best first, cut to `top_n`."""
        try:
            payload = json.loads(request.body)
        except ValueError:
            await self._send(
                writer, 400, _dumps(_error_body(self.error_format, "bad JSON", 400)).encode()
            )
            return True
        query, documents = payload.get("query"), payload.get("documents")
        if not isinstance(query, str) or not isinstance(documents, list):
            # As vLLM's request validation answers a body without them.
            message = "1 validation error for RerankRequest: query and documents are required"
            await self._send(
                writer, 400, _dumps(_error_body(self.error_format, message, 400)).encode()
            )
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
                await self._send(
                    writer, 400, _dumps(_error_body(self.error_format, message, 400)).encode()
                )
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
        results = self._rerank_results(query, texts, payload.get("top_n"), fault)
        answer = {
            "id": f"rerank-{uuid.uuid4().hex}",
            "model": reply.model or payload.get("model") or RERANK_MODEL,
            "usage": None if reply.no_usage else {"total_tokens": sum(counts)},
            "results": results,
        }
        await self._send(writer, 200, _dumps(answer).encode())
        return True

    @staticmethod
    def _rerank_results(
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
