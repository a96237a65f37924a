"""The emulator: one endpoint that answers every route, as vLLM does.

`Emulator` puts the routes (`chat`, `embeddings`, `rerank`, `models`) together over the
loopback server (`server`) and its state (`state`); here are the routing and the checks every
POST passes before its route: an injected fault (`fault_every`), the key, the model.
"""

from __future__ import annotations

import asyncio

from tests.support.emulator.chat import ChatRoute
from tests.support.emulator.embeddings import EmbeddingsRoute
from tests.support.emulator.models import ModelsRoute
from tests.support.emulator.rerank import RerankRoute
from tests.support.emulator.wire import RecordedRequest, _dumps, _error_body


class Emulator(ChatRoute, EmbeddingsRoute, RerankRoute, ModelsRoute):
    """The endpoint; use as a context manager or call `start()` / `stop()`."""

    async def _respond(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        if request.path.endswith("/models"):
            return await self._models(writer)
        is_embeddings = request.path.endswith("/embeddings")
        is_rerank = request.path.endswith("/rerank")
        if request.method != "POST" or not (
            request.path.endswith("/chat/completions") or is_embeddings or is_rerank
        ):
            await self._send(writer, 404, b'{"detail":"Not Found"}')
            return True
        if self.fault_every:
            self._posts += 1
            if self._posts % self.fault_every == 0:
                kind = self.faults_sent % 3
                self.faults_sent += 1
                if kind == 2:
                    writer.transport.abort()
                    self._sent(0)
                    return False
                status = 429 if kind == 0 else 503
                fault = _dumps(_error_body("nested", "injected fault", status)).encode()
                await self._send(writer, status, fault, headers={"retry-after": "0"})
                return True
        authorization = request.headers.get("authorization")
        if self.require_key is not None and authorization != f"Bearer {self.require_key}":
            body = _error_body("nested", "Invalid API key", 401)
            await self._send(writer, 401, _dumps(body).encode())
            return True
        unknown = self._unknown_model(request)
        if unknown is not None:
            body = _error_body(self.error_format, f"The model `{unknown}` does not exist.", 404)
            await self._send(writer, 404, _dumps(body).encode())
            return True
        if is_embeddings:
            return await self._embeddings(request, writer)
        if is_rerank:
            return await self._rerank(request, writer)
        return await self._chat(request, writer)
