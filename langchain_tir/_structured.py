"""Structured output: a schema's `response_format`, its parse, `with_structured_output`."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers.base import OutputParserLike
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import (
    convert_to_json_schema,
    convert_to_openai_function,
    convert_to_openai_tool,
)
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel

from ._parsers import WholeJsonOutputParser, WholePydanticOutputParser

if TYPE_CHECKING:
    from .chat_models import ChatTIRLlama


def is_pydantic_class(value: Any) -> bool:
    """Whether `value` is a pydantic class (a schema whose replies parse to instances)."""
    return isinstance(value, type) and is_basemodel_subclass(value)


def schema_response_format(schema: Any, strict: bool | None) -> dict[str, Any]:
    """`response_format` json_schema for a pydantic class, TypedDict or JSON schema."""
    json_schema = convert_to_json_schema(schema)
    response_format: dict[str, Any] = {
        "type": "json_schema",
        "json_schema": {"name": json_schema.get("title", "output"), "schema": json_schema},
    }
    if json_schema.get("description"):
        response_format["json_schema"]["description"] = json_schema["description"]
    if strict is not None:
        response_format["json_schema"]["strict"] = strict
    return response_format


def _wire_form(value: Any) -> bool:
    """Whether `value` is a response format as the wire takes it (not a schema to convert)."""
    if not isinstance(value, dict):
        return False
    kind = value.get("type")
    return kind in ("json_object", "text") or (kind == "json_schema" and "json_schema" in value)


def wire_response_format(value: Any) -> Any:
    """A `response_format` as the wire takes it, converted as ChatOpenAI converts one.

    A pydantic class, a TypedDict or a JSON schema becomes a `json_schema` response format (a
    pydantic class strict, its replies parsed); `{"name": ..., "schema": ...}` is wrapped; the
    wire's own forms (`json_schema`, `json_object`, `text`) go as they are.
    """
    if is_pydantic_class(value):
        return schema_response_format(value, True)
    if _wire_form(value):
        return value
    if isinstance(value, dict):
        if "name" in value and "schema" in value:
            return {"type": "json_schema", "json_schema": value}
        strict = value.get("strict")
        return schema_response_format(value, strict if isinstance(strict, bool) else None)
    return schema_response_format(value, None)


def openai_response_format(value: Any, strict: bool) -> Any:
    """`bind_tools(..., response_format=...)` as ChatOpenAI's turns it into the wire's form.

    A pydantic class stays one (its replies are parsed; `wire_response_format` sends it), as
    do the wire's own forms; a TypedDict or a JSON schema becomes ChatOpenAI's function-style
    `json_schema`, `strict` as given (ChatOpenAI's `bind_tools` passes True unless
    `strict=False`).
    """
    if is_pydantic_class(value) or _wire_form(value):
        return value
    if isinstance(value, dict) and "name" in value and "schema" in value:
        return {"type": "json_schema", "json_schema": value}
    function = convert_to_openai_function(value, strict=strict)
    function["schema"] = function.pop("parameters")
    return {"type": "json_schema", "json_schema": function}


def parse_reply(schema: type[BaseModel], message: AIMessage) -> BaseModel | None:
    """`additional_kwargs["parsed"]` for `response_format=<pydantic class>`, as ChatOpenAI's.

    None when the model called a tool instead of answering.

    Raises:
        OutputParserException: the reply is not the schema's JSON.
    """
    if message.tool_calls or message.invalid_tool_calls:
        return None
    parsed: BaseModel = WholePydanticOutputParser(pydantic_object=schema).parse(message.text)
    return parsed


def _none_for_tool_calls(parser: OutputParserLike[Any]) -> Runnable[Any, Any]:
    """The parser, except that a reply calling a tool parses to None (ChatOpenAI's rule)."""

    def parse(message: BaseMessage) -> Any:
        if isinstance(message, AIMessage) and message.tool_calls:
            return None
        return parser.invoke(message)

    async def aparse(message: BaseMessage) -> Any:
        if isinstance(message, AIMessage) and message.tool_calls:
            return None
        return await parser.ainvoke(message)

    return RunnableLambda(parse, afunc=aparse, name=parser.get_name())


def structured_output(
    model: ChatTIRLlama,
    schema: dict[str, Any] | type | None,
    *,
    method: Literal["json_schema", "function_calling", "json_mode"],
    include_raw: bool,
    strict: bool | None,
    tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool] | None,
    kwargs: dict[str, Any],
) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
    """`ChatTIRLlama.with_structured_output`'s runnable (see its docstring for the arguments)."""
    if method not in ("json_schema", "function_calling", "json_mode"):
        raise ValueError(
            f"method must be 'json_schema', 'function_calling' or 'json_mode', got {method!r}"
        )
    if schema is None and method != "json_mode":
        raise ValueError(f"method={method!r} needs a schema")
    if tools and method != "json_schema":
        # ChatOpenAI takes them and sends none (the call is forced to the schema, or the
        # reply is JSON): a program written for it keeps working, and is told why.
        warnings.warn(
            f"tools are used with method='json_schema' only; with method={method!r} the "
            "model must answer with the schema, so the tools are not sent (ChatOpenAI "
            "leaves them out too)",
            UserWarning,
            # The caller of with_structured_output, past it and this function.
            stacklevel=3,
        )
        tools = None
    is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    if schema is not None:
        # For tracing; langchain-core reads its "schema", so without one it is left out.
        try:
            traced: Any = convert_to_json_schema(schema)
        except ValueError:
            # A JSON schema without a title: json_mode needs none (ChatOpenAI traces the
            # schema as given); the other methods fail below saying why.
            traced = schema
        kwargs["ls_structured_output_format"] = {
            "kwargs": {"method": method, "strict": strict},
            "schema": traced,
        }
    llm: Runnable[LanguageModelInput, BaseMessage]
    parser: OutputParserLike[Any]
    if method == "function_calling":
        assert schema is not None
        tool_name = convert_to_openai_tool(schema)["function"]["name"]
        llm = model.bind_tools(
            [schema],
            tool_choice=tool_name,
            strict=strict,
            **kwargs,
        )
        if is_pydantic:
            parser = PydanticToolsParser(tools=[schema], first_tool_only=True)
        else:
            parser = JsonOutputKeyToolsParser(key_name=tool_name, first_tool_only=True)
    else:
        if method == "json_schema":
            assert schema is not None
            response_format = schema_response_format(schema, strict)
        else:
            response_format = {"type": "json_object"}
        if tools:
            kwargs["tools"] = [convert_to_openai_tool(t, strict=strict) for t in tools]
        llm = model.bind(response_format=response_format, **kwargs)
        if is_pydantic:
            parser = WholePydanticOutputParser(pydantic_object=schema)
        else:
            parser = WholeJsonOutputParser()
        if tools:
            parser = _none_for_tool_calls(parser)
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(
        parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
    )
    fallback = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback], exception_key="parsing_error")
