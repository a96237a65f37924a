"""Watching a stream for a tool call written as text (prompt mode, or a native slip)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from .tools import PYTHON_TAG, cut_calls, parse_text_tool_calls, scan_objects
from .wire import ChatChunk, ToolCallDelta

__all__ = ["TextToolCallFilter"]


def _could_become_call(held: str, names: Collection[str]) -> bool:
    """Whether text seen so far may still turn out to be a tool call."""
    text = held.lstrip()
    if not text or PYTHON_TAG.startswith(text) or "```".startswith(text):
        return True  # too little to tell
    if text.startswith(PYTHON_TAG):
        return _could_become_call(text[len(PYTHON_TAG) :].removesuffix("<|eom_id|>"), names)
    if text.startswith("```"):
        tag, newline, body = text.partition("\n")
        if not newline:
            return "```json".startswith(tag.rstrip().lower())
        if tag.strip("`").strip().lower() not in ("", "json"):
            return False  # a fenced program or table, not a call
        return _could_become_call(body.rstrip().rstrip("`"), names)
    if not text.startswith("{"):
        return False
    # Decided as soon as each top-level object closes: a call, or plain text after all.
    objects, stray, _ = scan_objects(text)
    return not stray and all(parse_text_tool_calls(o, names) is not None for o in objects)


class TextToolCallFilter:
    """Holds back streamed text only while it may still be a tool call.

    Text that cannot be a call (it does not start like one) is released at once, and every
    later delta passes straight through. Text that stays call-shaped is held to the end of the
    reply, where it becomes tool-call deltas, or is released as text if it was not a call.
    """

    __slots__ = ("_forced", "_held", "_names", "_text_mode")

    def __init__(self, names: Collection[str], forced: str | None = None) -> None:
        self._names = names
        self._forced = forced  # see tools.forced_name: a forced call cut short is still a call
        self._held: list[str] = []
        self._text_mode = False

    def process(self, chunk: ChatChunk) -> ChatChunk | None:
        """The chunk to hand on (its text maybe held back), or None to hand on nothing yet."""
        if self._text_mode:
            return chunk
        if chunk.tool_calls:
            # The server parsed a call natively: stop watching the text.
            self._text_mode = True
            held = self._release()
            return replace(chunk, text=held + (chunk.text or "")) if held else chunk
        if chunk.text:
            self._held.append(chunk.text)
            if not _could_become_call("".join(self._held), self._names):
                self._text_mode = True
                return replace(chunk, text=self._release())
            chunk = replace(chunk, text=None)
        if chunk.finish_reason:
            return self._finish(chunk)
        if chunk.text is None and chunk.role is None and chunk.usage is None:
            return None
        return chunk

    def _release(self) -> str:
        text = "".join(self._held)
        self._held.clear()
        return text

    def _finish(self, chunk: ChatChunk) -> ChatChunk:
        held = self._release()
        calls = parse_text_tool_calls(held, self._names) if held else None
        finish = "tool_calls"
        if not calls and held and self._forced is not None and chunk.finish_reason == "length":
            calls, finish = cut_calls(held, self._names, self._forced), "length"
        if calls:
            deltas = tuple(
                ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments)
                for i, c in enumerate(calls)
            )
            return replace(chunk, text=None, tool_calls=deltas, finish_reason=finish)
        return replace(chunk, text=(held + (chunk.text or "")) or None)
