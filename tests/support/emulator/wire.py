"""What every route shares: compact JSON, vLLM's error bodies, the request as recorded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _error_body(fmt: str, message: str, status: int) -> dict[str, Any]:
    error_type = HTTPStatus(status).phrase.replace(" ", "") + "Error" if status else "Error"
    if fmt == "flat":
        return {
            "object": "error",
            "message": message,
            "type": error_type,
            "param": None,
            "code": status,
        }
    return {"error": {"message": message, "type": error_type, "param": None, "code": status}}


@dataclass
class RecordedRequest:
    """What the emulator received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None
