"""`GET /models` over the shared transport."""

from __future__ import annotations

from typing import Any

from .._transport import APIClient
from .wire import served_window

__all__ = ["ModelsClient"]


class ModelsClient(APIClient):
    """Reads what an endpoint serves (`GET {base}/models`), for `config.model`."""

    def list(self) -> Any:
        """The endpoint's `/models` reply, as JSON.

        Raises:
            TIRError: a subclass for each kind of failure, after the retries the policy allows.
        """
        return self.transport.get("models", self.config.model)

    def served_window(self) -> int | None:
        """The context window the endpoint serves `config.model` with, or None if unreported.

        Raises:
            TIRError: the listing could not be read (not every gateway serves one).
        """
        return served_window(self.list(), self.config.model)
