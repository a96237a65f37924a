"""The embeddings route (`/embeddings`): bag-of-words vectors, so that similar texts are near."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import uuid
import zlib
from typing import Any

from tests.support.emulator.faults import Reply
from tests.support.emulator.server import Server
from tests.support.emulator.state import EMBED_DIM
from tests.support.emulator.wire import RecordedRequest, _dumps, _error_body


def embed_tokens(text: str) -> int:
    """Tokens the emulator counts for a text to embed: words plus the two special tokens."""
    return len(text.split()) + 2


def embed_vector(text: str, dim: int = EMBED_DIM) -> list[float]:
    """A unit bag-of-words vector: texts that share words are near, as a real model's are."""
    vector = [0.0] * dim
    for word in text.lower().split():
        word = word.strip(".,;:!?\"'()")
        if word:
            vector[zlib.crc32(word.encode()) % dim] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    # float32 round trip, so that vectors sent as floats equal those sent as base64.
    return list(struct.unpack(f"<{dim}f", struct.pack(f"<{dim}f", *(v / norm for v in vector))))


class EmbeddingsRoute(Server):
    """vLLM's embeddings API, with the embedding knobs of `Reply` and of the emulator."""

    async def _embeddings(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        """vLLM's /v1/embeddings: bag-of-words vectors, so that similar texts are near."""
        try:
            payload = json.loads(request.body)
        except ValueError:
            await self._send(
                writer, 400, _dumps(_error_body(self.error_format, "bad JSON", 400)).encode()
            )
            return True
        texts = payload.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        b64 = payload.get("encoding_format") == "base64"
        if b64 and self.embed_reject_base64:
            message = (
                "1 validation error for EmbeddingRequest\nencoding_format\n  Input should be "
                "'float' [type=literal_error, input_value='base64']"
            )
            await self._send(
                writer, 400, _dumps(_error_body(self.error_format, message, 400)).encode()
            )
            return True
        truncate = payload.get("truncate_prompt_tokens")
        counts = [embed_tokens(t) for t in texts]
        if self.embed_max_tokens is not None and truncate is None:
            too_long = [c for c in counts if c > self.embed_max_tokens]
            if too_long:
                message = (
                    f"This model's maximum context length is {self.embed_max_tokens} tokens. "
                    f"However, you requested {too_long[0]} tokens in the input for embedding "
                    "generation. Please reduce the length of the input."
                )
                await self._send(
                    writer, 400, _dumps(_error_body(self.error_format, message, 400)).encode()
                )
                return True
        reply = self._embed_queue.popleft() if self._embed_queue else Reply()
        await self._hold(reply)
        if reply.status >= 400 or reply.body is not None:
            body = reply.body or _error_body(reply.error_format, reply.message, reply.status)
            raw = body.encode() if isinstance(body, str) else _dumps(body).encode()
            await self._send(writer, reply.status, raw, headers=reply.headers)
            return True
        delay = reply.delay or self.embed_delay
        if delay:
            await asyncio.sleep(delay)
        dim = int(payload.get("dimensions") or self.embed_dim)
        data: list[dict[str, Any]] = []
        for index, text in enumerate(texts):
            vector = embed_vector(text, dim)
            encoded: Any = vector
            if b64 and not self.embed_ignore_base64:
                encoded = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
            data.append({"index": index, "object": "embedding", "embedding": encoded})
        if reply.short_by:
            data = data[: -reply.short_by]
        if reply.drop_index and data:
            del data[0]["index"]
        total = sum(counts)
        body = {
            "id": f"embd-{uuid.uuid4().hex}",
            "object": "list",
            "created": 1738753122,
            "model": reply.model or payload.get("model") or self.model,
            "data": data,
            "usage": None
            if reply.no_usage
            else {"prompt_tokens": total, "total_tokens": total, "completion_tokens": 0},
        }
        await self._send(writer, 200, _dumps(body).encode())
        return True
