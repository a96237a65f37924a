"""Tool binding: LangChain's tools and `tool_choice` spellings -> the OpenAI/vLLM request fields."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from ._errors import InvalidToolChoiceError


def wire_tool_choice(tool_choice: Any) -> Any:
    """Map LangChain's tool_choice spellings to the OpenAI/vLLM ones."""
    if tool_choice is None or tool_choice is False:
        return None
    if tool_choice is True or tool_choice in ("any", "required"):
        return "required"
    if tool_choice in ("auto", "none"):
        return tool_choice
    if isinstance(tool_choice, str):
        return {"type": "function", "function": {"name": tool_choice}}
    if isinstance(tool_choice, dict):
        return tool_choice
    raise ValueError(
        f"tool_choice must be 'auto', 'none', 'any', 'required', True, a tool name or a dict; "
        f"got {tool_choice!r}"
    )


def tool_binding(
    tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
    *,
    tool_choice: dict[str, Any] | str | bool | None,
    strict: bool | None,
    parallel_tool_calls: bool,
) -> dict[str, Any]:
    """The request fields `ChatTIRLlama.bind_tools` binds (see its docstring).

    Raises:
        InvalidToolChoiceError: `tool_choice` names a tool that is not among `tools`.
    """
    choice = wire_tool_choice(tool_choice)
    formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
    if strict is None and choice not in (None, "auto", "none"):
        # A forced call: without strict, vLLM forces the name and lets the model write
        # any JSON as the arguments (a small model writes the schema itself). Strict makes
        # vLLM hold the arguments to the tool's own schema, as TIRLlamaLLM's forced calls
        # are held: not LangChain's strict form of it, which makes every argument required
        # (OpenAI's rule, not vLLM's) and the model invent values where the tool has a
        # default.
        for tool in formatted:
            tool["function"]["strict"] = True
    if isinstance(choice, dict) and "function" in choice:
        names = {t["function"]["name"] for t in formatted}
        if choice["function"].get("name") not in names:
            # Refused before sending (ChatOpenAI's server answers it with a 400), with
            # the class the peer raises, so `except BadRequestError` catches both.
            raise InvalidToolChoiceError(
                f"tool_choice names {choice['function'].get('name')!r}, which is not among "
                f"the bound tools {sorted(names)}"
            )
    bound: dict[str, Any] = {"tools": formatted, "parallel_tool_calls": parallel_tool_calls}
    if choice is not None:
        bound["tool_choice"] = choice
    return bound
