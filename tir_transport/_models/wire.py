"""`GET /models`'s reply read, without I/O: the window an endpoint serves a model with."""

from __future__ import annotations

from typing import Any

__all__ = ["served_window"]


def served_window(listing: Any, model: str) -> int | None:
    """The context window `listing` (a `/models` reply) reports for `model`, or None.

    vLLM reports its `max_model_len` per model. The model is found by its id; a gateway's
    names may differ from the API name, so an endpoint serving one model is read from its
    first entry. Anything else (no window, no list, not a positive integer) is None: no
    endpoint has to report one.
    """
    models = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(models, list):
        return None
    entries = [m for m in models if isinstance(m, dict)]
    entry = next((m for m in entries if m.get("id") == model), entries[0] if entries else {})
    window = entry.get("max_model_len")
    return (
        window if isinstance(window, int) and not isinstance(window, bool) and window > 0 else None
    )
