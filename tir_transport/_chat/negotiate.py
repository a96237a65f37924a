"""Per-request choice of how to send tools and schemas, with the fallbacks an endpoint forces.

Pure apart from an `EndpointMemory` of what each endpoint rejected, one per `ChatClient`
(one request, or one client, never switches the whole process); the clients run it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Generator, Mapping
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
from .wire import ChatCompletion

logger = logging.getLogger("tir_transport")

_lock = threading.Lock()
# Every live memory, so that `forget_endpoints()` can reach them all.
_memories: weakref.WeakSet[EndpointMemory] = weakref.WeakSet()

# How a JSON schema is sent: response_format json_schema; vLLM's guided_json; an instruction
# with JSON mode; an instruction alone.
_NATIVE, _GUIDED_JSON, _JSON_MODE, _INSTRUCTION = 0, 1, 2, 3
_LEVEL_NAMES = {
    _GUIDED_JSON: "guided_json",
    _JSON_MODE: "an instruction with JSON mode",
    _INSTRUCTION: "an instruction alone",
}


class EndpointMemory:
    """What the endpoints one client talks to rejected: native tools, schema levels.

    Kept by the `ChatClient` that saw the rejection, so another client (another LangChain or
    LlamaIndex object) finds out for itself; a copy (pickled for a Ray actor) starts empty.
    """

    def __init__(self) -> None:
        self.prompt_tool_endpoints: set[str] = set()
        self.schema_levels: dict[str, int] = {}
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
        remembered, self._level = False, _NATIVE
        if self._names or self._schema is not None:
            with _lock:
                remembered = url in self._memory.prompt_tool_endpoints
                if self._schema is not None:
                    self._level = self._memory.schema_levels.get(url, _NATIVE)
        self._prompt = bool(self._names) and (
            tool_mode == "prompt" or (tool_mode == "auto" and remembered)
        )
        self._repaired = False

    def payload(self) -> Mapping[str, Any]:
        """The request body to send now."""
        if not self._prompt and self._level == _NATIVE:
            return self._original  # the common case: nothing to rewrite, nothing to copy
        body = dict(self._original)
        if self._prompt:
            body = to_prompt_mode(body)
        if self._schema is not None and self._level == _GUIDED_JSON:
            body.pop("response_format", None)
            body["guided_json"] = self._schema
        elif self._schema is not None and self._level >= _JSON_MODE:
            body = self._instruction().apply(body)
        return body

    def _instruction(self) -> SchemaInstruction:
        assert self._schema is not None
        return SchemaInstruction(self._schema, json_object=self._level == _JSON_MODE)

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
            if self._level == _NATIVE and is_response_format_rejection(error):
                self._set_level(_GUIDED_JSON, "response_format json_schema")
                return self.payload()
            if self._level == _GUIDED_JSON and (
                is_guided_json_rejection(error) or is_response_format_rejection(error)
            ):
                self._set_level(_JSON_MODE, "guided_json")
                return self.payload()
            if self._level == _JSON_MODE and is_response_format_rejection(error):
                self._set_level(_INSTRUCTION, "response_format json_object")
                return self.payload()
        raise error

    def on_completion(self, completion: ChatCompletion) -> ChatCompletion | Mapping[str, Any]:
        """The reply to hand on, or the body of one more request to send first."""
        if self._watch_text:
            completion = read_text_calls(completion, self._names, self._forced)
        if self._schema is None or self._level == _NATIVE:
            return completion
        instruction = self._instruction()
        problem = instruction.problem(completion.text)
        if problem is None:
            return instruction.clean(completion)
        if self._level == _GUIDED_JSON:
            # Accepted but ignored (a server that drops unknown fields): ask in words instead.
            self._set_level(_JSON_MODE, "guided_json (ignored: the reply did not match)")
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

    def checks_replies(self) -> bool:
        """Whether a reply must be read whole before it is handed on.

        True when a JSON schema goes out in a form the endpoint may not hold the reply to
        (guided_json, an instruction): only the whole reply shows whether it matches, and
        whether to fall back, so a stream is read to its end first.
        """
        return self._schema is not None and self._level != _NATIVE

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

    def _set_level(self, level: int, rejected: str) -> None:
        self._level = level
        with _lock:
            levels = self._memory.schema_levels
            first = levels.get(self._url, _NATIVE) < level
            levels[self._url] = max(level, levels.get(self._url, _NATIVE))
        if first:
            logger.info(
                "%s rejected %s: falling back to %s for structured output",
                self._url,
                rejected,
                _LEVEL_NAMES[level],
            )
