"""The models route (`/models`, with vLLM's `max_model_len`) and the models served."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.support.emulator.server import Server
from tests.support.emulator.wire import RecordedRequest, _dumps


class ModelsRoute(Server):
    """What `/models` lists, and which model names a POST may use (`served_models`)."""

    async def _models(self, writer: asyncio.StreamWriter) -> bool:
        """vLLM's /v1/models: the one model served, with its window when it reports one."""
        model: dict[str, Any] = {"id": self.model, "object": "model"}
        if self.max_model_len is not None:
            model["max_model_len"] = self.max_model_len
        listing = {"object": "list", "data": [model]}
        await self._send(writer, 200, _dumps(listing).encode())
        return True

    def _unknown_model(self, request: RecordedRequest) -> str | None:
        """The model a POST names when this server does not serve it (vLLM answers 404)."""
        if self.served_models is None:
            return None
        try:
            model = json.loads(request.body).get("model")
        except (ValueError, AttributeError):
            return None
        return model if isinstance(model, str) and model not in self.served_models else None
