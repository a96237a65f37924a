"""Helpers the adapter tests share."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.runnables import Runnable


class Mode:
    """Runs a runnable sync or async, so that one test body covers both."""

    def __init__(self, name: str) -> None:
        self.name = name

    def invoke(self, runnable: Runnable[Any, Any], value: Any, **kwargs: Any) -> Any:
        if self.name == "sync":
            return runnable.invoke(value, **kwargs)
        return asyncio.run(runnable.ainvoke(value, **kwargs))

    def stream(self, runnable: Runnable[Any, Any], value: Any, **kwargs: Any) -> list[Any]:
        if self.name == "sync":
            return list(runnable.stream(value, **kwargs))

        async def collect() -> list[Any]:
            return [c async for c in runnable.astream(value, **kwargs)]

        return asyncio.run(collect())
