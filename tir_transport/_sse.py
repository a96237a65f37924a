"""A sans-IO Server-Sent Events decoder: bytes in, events out."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

__all__ = ["SSEDecoder", "ServerSentEvent"]


@dataclass(slots=True)
class ServerSentEvent:
    """One dispatched event (read-only by convention; not frozen, which is slower to build)."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Incremental decoder following the WHATWG event-stream rules.

    Feed it whatever the socket gave (any split, even inside a UTF-8 character or a CRLF);
    it returns the events completed so far. Each complete line is decoded exactly once:
    a partial line is kept as pieces and only joined when its end arrives. There is nothing
    to flush at the end of a stream: an event whose blank line never came is dropped (the
    spec says so), and `pending` tells whether one was cut off.
    """

    __slots__ = ("_data", "_event", "_id", "_last_id", "_partial", "_retry", "_skip_lf", "_utf8")

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial: list[str] = []
        self._skip_lf = False
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode `chunk` and return the events it completed."""
        text = self._utf8.decode(chunk)
        if not text:
            return []
        if self._skip_lf:
            # The previous chunk ended in CR; a LF here belongs to that CRLF.
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
                if not text:
                    return []
        if "\r" in text:
            if text[-1] == "\r":
                self._skip_lf = True
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:
            self._partial.append(text)
            return []
        lines = text.split("\n")
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = "".join(self._partial)
            self._partial.clear()
        tail = lines.pop()
        if tail:
            self._partial.append(tail)
        events: list[ServerSentEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    @property
    def pending(self) -> bool:
        """Whether a started, undispatched event or partial line is buffered."""
        return bool(self._partial or self._data)

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith("data: "):
            # The line nearly every event of a chat stream is: take it without parsing.
            self._data.append(line[6:])
            return None
        if line[0] == ":":
            return None  # a comment, e.g. a keep-alive
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if self._id is not None:
            self._last_id = self._id
        if not self._data:
            self._event = ""
            self._retry = None
            return None
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        event = ServerSentEvent(
            data=data, event=self._event or "message", id=self._last_id, retry=self._retry
        )
        self._data = []
        self._event = ""
        self._retry = None
        return event
