"""Structured-output parsers whose streams end in the whole reply's parse, or an error."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.messages import BaseMessage, BaseMessageChunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGenerationChunk, GenerationChunk

_NOTHING = object()


def _generation(chunks: list[str | BaseMessage]) -> ChatGenerationChunk | GenerationChunk:
    whole: Any = None
    for chunk in chunks:
        if isinstance(chunk, BaseMessageChunk):
            piece: Any = ChatGenerationChunk(message=chunk)
        elif isinstance(chunk, BaseMessage):
            piece = ChatGenerationChunk(message=BaseMessageChunk(**chunk.model_dump()))
        else:
            piece = GenerationChunk(text=chunk)
        whole = piece if whole is None else whole + piece
    return whole if whole is not None else GenerationChunk(text="")


class _WholeReplyCheck:
    """Once a stream ends, parse the whole reply, as `invoke` does.

    A reply that never parses raises `OutputParserException` instead of ending the stream
    with nothing, and the last value given is the whole reply's.
    """

    def _transform(self, input: Iterator[str | BaseMessage]) -> Iterator[Any]:
        seen: list[str | BaseMessage] = []

        def tee() -> Iterator[str | BaseMessage]:
            for chunk in input:
                seen.append(chunk)
                yield chunk

        last: Any = _NOTHING
        for value in super()._transform(tee()):  # type: ignore[misc]
            last = value
            yield value
        whole = self.parse_result([_generation(seen)], partial=False)  # type: ignore[attr-defined]
        if last is _NOTHING or whole != last:
            yield whole

    async def _atransform(
        self,
        input: AsyncIterator[str | BaseMessage],
    ) -> AsyncIterator[Any]:
        seen: list[str | BaseMessage] = []

        async def tee() -> AsyncIterator[str | BaseMessage]:
            async for chunk in input:
                seen.append(chunk)
                yield chunk

        last: Any = _NOTHING
        async for value in super()._atransform(tee()):  # type: ignore[misc]
            last = value
            yield value
        whole = await self.aparse_result([_generation(seen)], partial=False)  # type: ignore[attr-defined]
        if last is _NOTHING or whole != last:
            yield whole


def _whole_reply_parser(base: type, name: str) -> Any:
    # Built with type(): the pydantic mypy plugin fails on a class statement that subclasses
    # these parsers ("TBaseModel is not defined", from their `pydantic_object` field).
    doc = f"`{base.__name__}` whose stream ends in the whole reply's parse, or raises."
    cls = type(name, (_WholeReplyCheck, base), {"__module__": __name__, "__doc__": doc})

    # Traces and event filters (`astream_events(include_names=[...])`) see the parser under
    # LangChain's own name, as they would with ChatOpenAI.
    def get_name(self: Any, suffix: str | None = None, *, name: str | None = None) -> str:
        named: str = base.get_name(self, suffix, name=name or self.name or base.__name__)  # type: ignore[attr-defined]
        return named

    cls.get_name = get_name  # type: ignore[attr-defined]
    return cls


WholeJsonOutputParser = _whole_reply_parser(JsonOutputParser, "WholeJsonOutputParser")
WholePydanticOutputParser = _whole_reply_parser(PydanticOutputParser, "WholePydanticOutputParser")
