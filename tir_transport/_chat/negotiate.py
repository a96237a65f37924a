"""Per-request choice of how to send tools and schemas, with the fallbacks an endpoint forces.

Pure apart from an `EndpointMemory` of what each endpoint rejected, one per `ChatClient`
(one request, or one client, never switches the whole process); the clients run it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

from .._errors import StructuredOutputError, TIRError
from .structured import (
    SchemaInstruction,
    is_guided_json_rejection,
    is_response_format_rejection,
)
from .tool_stream import TextToolCallFilter
from .tools import (
    ToolMode,
    forced_name,
    is_tools_rejection,
    read_text_calls,
    to_prompt_mode,
    tool_names,
)
from .wire import ChatChunk, ChatCompletion

logger = logging.getLogger("tir_transport")

_lock = threading.Lock()
# Every live memory, so that `forget_endpoints()` can reach them all.
_memories: weakref.WeakSet[EndpointMemory] = weakref.WeakSet()


class SchemaLevel(IntEnum):
    """How a JSON schema is sent, from the best an endpoint may take down to what any takes.

    Ordered: a fallback only ever goes down the list (a higher value), per endpoint.
    """

    NATIVE = 0  # response_format json_schema
    GUIDED_JSON = 1  # vLLM's guided_json
    JSON_MODE = 2  # an instruction, with response_format json_object
    INSTRUCTION = 3  # an instruction alone

    @property
    def said(self) -> str:
        """How a log line names this level."""
        return _SAID[self]


_SAID = {
    SchemaLevel.NATIVE: "response_format json_schema",
    SchemaLevel.GUIDED_JSON: "guided_json",
    SchemaLevel.JSON_MODE: "an instruction with JSON mode",
    SchemaLevel.INSTRUCTION: "an instruction alone",
}


@dataclass(frozen=True, slots=True)
class OpenStream:
    """A stream plan's step: send this body as a new streamed request (the last one is over)."""

    body: Mapping[str, Any]


# A streamed call's plan (`Negotiation.stream_exchange`): yields `OpenStream` or the chunks to
# hand on now; is sent each event of the stream it opened last: a chunk, its error, or None
# for its end.
StreamPlan = Generator[OpenStream | list[ChatChunk], ChatChunk | TIRError | None, None]


class EndpointMemory:
    """What the endpoints one client talks to rejected: native tools, schema levels.

    Kept by the `ChatClient` that saw the rejection, so another client (another LangChain or
    LlamaIndex object) finds out for itself; a copy (pickled for a Ray actor) starts empty.
    """

    def __init__(self) -> None:
        self.prompt_tool_endpoints: set[str] = set()
        self.schema_levels: dict[str, SchemaLevel] = {}
        with _lock:
            _memories.add(self)

    def __reduce__(self) -> tuple[type[EndpointMemory], tuple[()]]:
        return (EndpointMemory, ())

    def forget(self) -> None:
        """Forget everything this memory holds."""
        with _lock:
            self.prompt_tool_endpoints.clear()
            self.schema_levels.clear()


def forget_endpoints() -> None:
    """Forget what endpoints rejected, in every client.

    For tests, or after an endpoint was reconfigured (a new client starts knowing nothing).
    """
    with _lock:
        memories = list(_memories)
    for memory in memories:
        memory.forget()


def _json_schema(response_format: Any) -> Mapping[str, Any] | None:
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema")
    return schema if isinstance(schema, Mapping) else None


def negotiates(payload: Mapping[str, Any]) -> bool:
    """Whether a request has anything to negotiate (tools, or a JSON schema)."""
    return bool(tool_names(payload.get("tools"))) or (
        _json_schema(payload.get("response_format")) is not None
    )


class Negotiation:
    """How one request is sent, and what to do when the endpoint says no.

    A request with neither `tools` nor a JSON schema has nothing to negotiate: it goes out as
    it is, and an error is raised as it is.
    """

    def __init__(
        self,
        payload: Mapping[str, Any],
        url: str,
        tool_mode: ToolMode,
        memory: EndpointMemory | None = None,
    ) -> None:
        self._memory = memory if memory is not None else EndpointMemory()
        self._original = payload
        self._url = url
        self._tool_mode = tool_mode
        self._names = tool_names(payload.get("tools"))
        self._watch_text = bool(self._names) and payload.get("tool_choice") != "none"
        self._forced = forced_name(payload.get("tool_choice"), self._names)
        self._schema = _json_schema(payload.get("response_format"))
        remembered, self._level = False, SchemaLevel.NATIVE
        if self._names or self._schema is not None:
            with _lock:
                remembered = url in self._memory.prompt_tool_endpoints
                if self._schema is not None:
                    self._level = self._memory.schema_levels.get(url, SchemaLevel.NATIVE)
        self._prompt = bool(self._names) and (
            tool_mode == "prompt" or (tool_mode == "auto" and remembered)
        )
        self._repaired = False

    def payload(self) -> Mapping[str, Any]:
        """The request body to send now."""
        if not self._prompt and self._level == SchemaLevel.NATIVE:
            return self._original  # the common case: nothing to rewrite, nothing to copy
        body = dict(self._original)
        if self._prompt:
            body = to_prompt_mode(body)
        if self._schema is not None and self._level == SchemaLevel.GUIDED_JSON:
            body.pop("response_format", None)
            body["guided_json"] = self._schema
        elif self._schema is not None and self._level >= SchemaLevel.JSON_MODE:
            body = self._instruction().apply(body)
        return body

    def _instruction(self) -> SchemaInstruction:
        assert self._schema is not None
        return SchemaInstruction(self._schema, json_object=self._level == SchemaLevel.JSON_MODE)

    def on_error(self, error: TIRError) -> Mapping[str, Any]:
        """The body to send instead after `error`, or raise `error` when there is none."""
        if (
            self._names
            and not self._prompt
            and self._tool_mode == "auto"
            and is_tools_rejection(error)
        ):
            self._prompt = True
            self._remember_tools()
            return self.payload()
        if self._schema is not None:
            if self._level == SchemaLevel.NATIVE and is_response_format_rejection(error):
                self._set_level(SchemaLevel.GUIDED_JSON, "response_format json_schema")
                return self.payload()
            if self._level == SchemaLevel.GUIDED_JSON and (
                is_guided_json_rejection(error) or is_response_format_rejection(error)
            ):
                self._set_level(SchemaLevel.JSON_MODE, "guided_json")
                return self.payload()
            if self._level == SchemaLevel.JSON_MODE and is_response_format_rejection(error):
                self._set_level(SchemaLevel.INSTRUCTION, "response_format json_object")
                return self.payload()
        raise error

    def on_completion(self, completion: ChatCompletion) -> ChatCompletion | Mapping[str, Any]:
        """The reply to hand on, or the body of one more request to send first."""
        if self._watch_text:
            completion = read_text_calls(completion, self._names, self._forced)
        if self._schema is None or self._level == SchemaLevel.NATIVE:
            return completion
        instruction = self._instruction()
        problem = instruction.problem(completion.text)
        if problem is None:
            return instruction.clean(completion)
        if self._level == SchemaLevel.GUIDED_JSON:
            # Accepted but ignored (a server that drops unknown fields): ask in words instead.
            self._set_level(SchemaLevel.JSON_MODE, "guided_json (ignored: the reply did not match)")
            return self.payload()
        if not self._repaired:
            self._repaired = True
            return instruction.repair(self.payload(), completion.text, problem)
        raise StructuredOutputError(
            f"the model's reply does not match the JSON schema even after one repair attempt: "
            f"{problem}. The endpoint takes neither response_format json_schema nor guided_json;"
            " use a model endpoint that does, or method='function_calling'."
        )

    def exchange(self) -> Generator[Mapping[str, Any], ChatCompletion | TIRError, ChatCompletion]:
        """The requests of a non-streamed call, as a plan a sync or async driver runs.

        Yields each body to send and is sent its reply or its error (after the HTTP layer's
        retries); returns the reply to hand on, or raises when there is no other way to ask.
        """
        body = self.payload()
        while True:
            outcome = yield body
            if isinstance(outcome, TIRError):
                body = self.on_error(outcome)
                continue
            result = self.on_completion(outcome)
            if isinstance(result, ChatCompletion):
                return result
            body = result

    def stream_exchange(self) -> StreamPlan:
        """The requests of a streamed call, as a plan a sync or async driver runs.

        Fallbacks happen only while nothing has been handed on: an error after a chunk went
        out is raised. When the reply must be checked whole first (`checks_replies`), the
        stream is read to its end, then handed on checked, as one text chunk and the closing
        ones, or asked again another way.
        """
        body = self.payload()
        while True:
            whole: list[ChatChunk] | None = [] if self.checks_replies() else None
            watch = None if whole is not None else self.stream_filter()
            handed_on = False
            event = yield OpenStream(body)
            while isinstance(event, ChatChunk):
                out: ChatChunk | None = None
                if whole is not None:
                    whole.append(event)
                else:
                    out = watch.process(event) if watch else event
                handed_on = handed_on or out is not None
                event = yield [out] if out is not None else []
            if isinstance(event, TIRError):
                if handed_on:
                    raise event
                body = self.on_error(event)  # raises when there is no other way to ask
                continue
            if whole is None:
                return  # the end of a stream handed on as it came
            result = self.on_completion(_whole(whole))
            if isinstance(result, ChatCompletion):
                yield list(_checked(whole, result))
                return
            body = result

    def checks_replies(self) -> bool:
        """Whether a reply must be read whole before it is handed on.

        True when a JSON schema goes out in a form the endpoint may not hold the reply to
        (guided_json, an instruction): only the whole reply shows whether it matches, and
        whether to fall back, so a stream is read to its end first.
        """
        return self._schema is not None and self._level != SchemaLevel.NATIVE

    def stream_filter(self) -> TextToolCallFilter | None:
        """A fresh filter for a stream's text, when tools are in play."""
        return TextToolCallFilter(self._names, self._forced) if self._watch_text else None

    def _remember_tools(self) -> None:
        with _lock:
            first = self._url not in self._memory.prompt_tool_endpoints
            self._memory.prompt_tool_endpoints.add(self._url)
        if first:
            logger.info(
                "%s does not take native tools (vLLM without tool parsing): sending tools in "
                "the prompt (Llama 3.1 JSON format) from now on, for this client",
                self._url,
            )

    def _set_level(self, level: SchemaLevel, rejected: str) -> None:
        self._level = level
        with _lock:
            levels = self._memory.schema_levels
            first = levels.get(self._url, SchemaLevel.NATIVE) < level
            levels[self._url] = max(level, levels.get(self._url, SchemaLevel.NATIVE))
        if first:
            logger.info(
                "%s rejected %s: falling back to %s for structured output",
                self._url,
                rejected,
                level.said,
            )


def _whole(chunks: list[ChatChunk]) -> ChatCompletion:
    """The reply a whole stream makes, to be checked as a non-streamed one is."""
    last = next((c for c in reversed(chunks) if c.finish_reason), None)
    return ChatCompletion(
        id=next((c.id for c in chunks if c.id), None),
        model=next((c.model for c in chunks if c.model), None),
        text="".join(c.text or "" for c in chunks),
        tool_calls=(),
        finish_reason=last.finish_reason if last else None,
        stop_reason=last.stop_reason if last else None,
        usage=next((c.usage for c in reversed(chunks) if c.usage is not None), None),
        raw={},
    )


def _checked(chunks: list[ChatChunk], reply: ChatCompletion) -> Iterator[ChatChunk]:
    """A checked reply as a stream: its (cleaned) text in one chunk, then the closing ones."""
    first = chunks[0] if chunks else None
    yield ChatChunk(
        id=reply.id,
        model=reply.model,
        text=reply.text,
        role=first.role if first else "assistant",
        tool_calls=(),
        finish_reason=None,
        stop_reason=None,
        usage=None,
        raw={},
    )
    for chunk in chunks:
        if chunk.finish_reason or chunk.usage is not None:
            yield replace(chunk, text=None)
