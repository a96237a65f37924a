"""Result shapes: a completion's ChatResult, a stream's closing chunk, llm_outputs summed."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from tir_transport import ChatCompletion

from ._convert import StreamConverter, completion_to_message
from ._structured import is_pydantic_class, parse_reply


def chat_result(completion: ChatCompletion, schema: Any, model: str) -> ChatResult:
    """A completion as LangChain's result; `model` names it when the reply does not."""
    message = completion_to_message(completion)
    if is_pydantic_class(schema):
        message.additional_kwargs["parsed"] = parse_reply(schema, message)
    generation_info = {"finish_reason": completion.finish_reason}
    llm_output: dict[str, Any] = {
        "model_name": completion.model or model,
        "system_fingerprint": completion.raw.get("system_fingerprint"),
        "id": completion.id,
    }
    if "token_usage" in message.response_metadata:
        # OpenAI's names (prompt_tokens, completion_tokens, total_tokens), as ChatOpenAI.
        llm_output["token_usage"] = message.response_metadata["token_usage"]
    return ChatResult(
        generations=[ChatGeneration(message=message, generation_info=generation_info)],
        llm_output=llm_output,
    )


def closing_chunk(converter: StreamConverter, schema: Any, texts: list[str]) -> ChatGenerationChunk:
    """The chunk that ends a stream: its finish reason, usage and (for a schema) the parse."""
    message = converter.last()
    if is_pydantic_class(schema) and not converter.seen_calls:
        # The whole reply's parse, on the closing chunk, as ChatOpenAI gives it.
        message.additional_kwargs["parsed"] = parse_reply(schema, AIMessage("".join(texts)))
    info = {"finish_reason": converter.finish_reason} if converter.finish_reason else None
    return ChatGenerationChunk(message=message, generation_info=info)


def _add_usage(total: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """`usage` added to `total` field by field, nested dicts too; None counts as absent."""
    summed = dict(total)
    for key, value in usage.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, dict):
            before = summed.get(key)
            summed[key] = _add_usage(before if isinstance(before, dict) else {}, value)
        elif isinstance(value, int | float):
            before = summed.get(key)
            summed[key] = value + (before if isinstance(before, int | float) else 0)
    return summed


def combine_llm_outputs(llm_outputs: list[dict[str, Any] | None], model: str) -> dict[str, Any]:
    """`BaseChatModel._combine_llm_outputs` for `generate` over several inputs."""
    # As ChatOpenAI combines them: the token usage of all of them summed field by field (the
    # nested `prompt_tokens_details` too), the model, and the first `system_fingerprint`.
    # Streamed outputs are None: usage stays {}.
    usage: dict[str, Any] = {}
    model_name: Any = None
    fingerprint: Any = None
    for output in llm_outputs:
        if not output:
            continue
        usage = _add_usage(usage, output.get("token_usage") or {})
        model_name = model_name or output.get("model_name")
        fingerprint = fingerprint or output.get("system_fingerprint")
    combined: dict[str, Any] = {"token_usage": usage, "model_name": model_name or model}
    if fingerprint:
        combined["system_fingerprint"] = fingerprint
    return combined
