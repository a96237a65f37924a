"""`ChatTIRLlama`: E2E Networks TIR chat models as a LangChain chat model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, ClassVar, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.chat_models import (
    BaseChatModel,
    agenerate_from_stream,
    generate_from_stream,
)
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import AliasChoices, BaseModel, Field, field_validator

from tir_transport import count_message_tokens, tokenizer_for
from tir_transport.adapter import TIRChatConnection, build_payload

from ._convert import PROVIDER, StreamConverter, message_to_wire, messages_to_wire
from ._errors import langchain_errors
from ._profile import model_profile
from ._results import chat_result, closing_chunk, combine_llm_outputs
from ._structured import openai_response_format, structured_output, wire_response_format
from ._tools import tool_binding, wire_tool_choice

__all__ = ["ChatTIRLlama"]


class ChatTIRLlama(TIRChatConnection, BaseChatModel):
    """A chat model served by E2E Networks TIR (GenAI API or a model endpoint).

    Setup:
        `pip install "tir-llama[langchain]"`, then set `TIR_API_KEY` and `TIR_PROJECT_ID`.

    Example:
        ```python
        from langchain_tir import ChatTIRLlama

        llm = ChatTIRLlama(temperature=0)
        llm.invoke("Name three rivers in India.")
        for chunk in llm.stream("Tell me a story."):
            print(chunk.text, end="")
        ```
    """

    # model, tool_mode, temperature, top_p, frequency_penalty, presence_penalty, seed and
    # context_window: TIRChatConnection's, declared once for both chat adapters. These two
    # take ChatOpenAI's names, which OpenAILike's differ from.
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        validation_alias=AliasChoices("max_tokens", "max_completion_tokens"),
    )
    """Most tokens to generate (also taken as ChatOpenAI's `max_completion_tokens`)."""
    stop: list[str] | str | None = Field(default=None, alias="stop_sequences")
    """Where to stop generating: a list of strings, or one (as ChatOpenAI takes it)."""

    streaming: bool = False
    """Stream internally even on `invoke` (callbacks then see every token)."""
    stream_usage: bool = True
    """Ask for the usage chunk at the end of a stream (None, as ChatOpenAI takes it: True)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Other request fields, sent as they are. Unknown constructor arguments land here, with
    a warning that names them (a likely misspelling of a field is an error instead); a field
    of this class given here too is an error."""
    extra_body: dict[str, Any] | None = None
    """vLLM's extra fields (`top_k`, `repetition_penalty`, ...), merged in last."""

    # As ChatOpenAI does: unknown arguments are request fields, not silently dropped (the
    # connection model's validator moves them, after refusing peers' names and secrets).
    _request_fields: ClassVar[str | None] = "model_kwargs"

    @field_validator("stream_usage", mode="before")
    @classmethod
    def _usage_unless_refused(cls, value: Any) -> Any:
        # ChatOpenAI takes None ("the default"): here that is the usage chunk, as always.
        return True if value is None else value

    @property
    def model_name(self) -> str:
        """The model, under ChatOpenAI's attribute name."""
        return self.model

    # -- LangChain plumbing ----------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "tir-chat"

    @property
    def lc_secrets(self) -> dict[str, str]:
        """Where serialisation finds the key: never in the serialised object itself."""
        return {"api_key": "TIR_API_KEY"}

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """Whether `dumpd` / `load` round-trip this class (they do, without the key)."""
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """The import path LangChain's serialisation records."""
        return ["langchain_tir", "chat_models"]

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "host": self.host,
            "project_id": self.project_id,
            "endpoint_id": self.endpoint_id,
            "base_url": self.base_url,
            **self._sampling_params(),
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs.get("model") or self.model,
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        stops: Any = stop if stop is not None else kwargs.get("stop", self.stop)
        if stops:
            params["ls_stop"] = [stops] if isinstance(stops, str) else stops
        return params

    def _resolve_model_profile(self) -> ModelProfile | None:
        return model_profile(self.model, self.context_window)

    # -- token counting (offline: the model's own tokenizer, see docs/tokens.md) -------------

    def get_token_ids(self, text: str) -> list[int]:
        """The model's token ids for a text (special-token look-alikes count as text).

        Exact for Llama 3.x and 4 with `pip install "tir-llama[tokens]"`; without it, or for
        another model, approximate (placeholder ids), with one warning per process.
        """
        if self.custom_get_token_ids is not None:
            return self.custom_get_token_ids(text)
        return tokenizer_for(self.model).encode(text)

    def get_num_tokens(self, text: str) -> int:
        """How many tokens the model's tokenizer makes of a text."""
        if self.custom_get_token_ids is not None:
            return len(self.custom_get_token_ids(text))
        return tokenizer_for(self.model).count(text)

    def get_num_tokens_from_messages(
        self,
        messages: list[BaseMessage],
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool] | None = None,
    ) -> int:
        """The prompt tokens these messages take: never fewer than the server's `prompt_tokens`.

        Counts Llama 3.1's chat template as vLLM applies it (begin-of-text, the system turn
        with its date preamble, role headers, end-of-turn markers, tool definitions, tool
        calls and results, the generation prompt), as a bound that holds whatever order the
        messages are sent in and whichever of them are: `trim_messages(...,
        token_counter=llm)`, which counts lists reversed, then never keeps more than
        `max_tokens`. In the order given it is exact but for 5 tokens when the first message
        is a system message and 5 more with tools. See docs/tokens.md.

        Args:
            messages: the conversation (an empty one counts the template's frame alone).
            tools: tools sent with the request (as for `bind_tools`), whose definitions the
                template puts into the first user message.

        Returns:
            The number of prompt tokens (without the `[tokens]` extra: a bound, one token per
            UTF-8 byte of text).

        Raises:
            UnsupportedContentError: a message carries an image, audio or a file (a request
                with it would be refused the same way).
        """
        wire = [message_to_wire(m) for m in messages]
        specs = None if tools is None else [convert_to_openai_tool(t) for t in tools]
        return count_message_tokens(
            self.model, wire, specs, tool_mode=self.tool_mode, any_order=True
        )

    # -- requests --------------------------------------------------------------------------

    def _sampling_params(self) -> dict[str, Any]:
        params = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "seed": self.seed,
            "logprobs": self.logprobs,
            "top_logprobs": self.top_logprobs,
        }
        return {k: v for k, v in params.items() if v is not None}

    def _payload(
        self,
        messages: Sequence[BaseMessage],
        stop: list[str] | None,
        stream: bool,
        kwargs: dict[str, Any],
    ) -> dict[str, Any]:
        params: dict[str, Any] = {**self._sampling_params(), **self.model_kwargs, **kwargs}
        model = params.pop("model", None) or self.model
        extra_body = {**(self.extra_body or {}), **(params.pop("extra_body", None) or {})}
        # A per-call stop, even an empty one, replaces the constructor's (as ChatOpenAI's).
        stops: Any = params.get("stop", self.stop) if stop is None else stop
        params["stop"] = [stops] if isinstance(stops, str) else (stops or None)
        if "tool_choice" in params:
            params["tool_choice"] = wire_tool_choice(params["tool_choice"])
        if params.get("response_format") is not None:
            # A TypedDict or a JSON schema too (bind_tools(..., response_format=...)): sent
            # as it was given, vLLM refuses it.
            params["response_format"] = wire_response_format(params["response_format"])
        return build_payload(
            messages_to_wire(messages),
            model,
            stream=stream,
            include_usage=bool(params.pop("stream_usage", self.stream_usage)),
            extra_body=extra_body,
            key_to_refuse=self._key_text(),
            **params,
        )

    def _combine_llm_outputs(self, llm_outputs: list[dict[str, Any] | None]) -> dict[str, Any]:
        # `generate` over several inputs: usage summed, as ChatOpenAI combines them.
        return combine_llm_outputs(llm_outputs, self.model)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        payload = self._payload(messages, stop, False, kwargs)
        with langchain_errors():
            completion = self._client.create(payload)
        return chat_result(completion, kwargs.get("response_format"), self.model)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))
        payload = self._payload(messages, stop, False, kwargs)
        with langchain_errors():
            completion = await self._client.acreate(payload)
        return chat_result(completion, kwargs.get("response_format"), self.model)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        payload = self._payload(messages, stop, True, kwargs)
        converter = StreamConverter()
        texts: list[str] = []
        with langchain_errors():
            stream = self._client.stream(payload)
            try:
                for chunk in stream:
                    message = converter.convert(chunk)
                    if message is not None:
                        # The message's content is this text: `message.text` would work it out
                        # again, twice a chunk.
                        text = chunk.text or ""
                        texts.append(text)
                        generation = ChatGenerationChunk(message=message)
                        if run_manager:
                            run_manager.on_llm_new_token(text, chunk=generation)
                        yield generation
            finally:
                stream.close()
        yield closing_chunk(converter, kwargs.get("response_format"), texts)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        payload = self._payload(messages, stop, True, kwargs)
        converter = StreamConverter()
        texts: list[str] = []
        with langchain_errors():
            stream = self._client.astream(payload)
            try:
                async for chunk in stream:
                    message = converter.convert(chunk)
                    if message is not None:
                        text = chunk.text or ""  # the message's content (see `_stream`)
                        texts.append(text)
                        generation = ChatGenerationChunk(message=message)
                        if run_manager:
                            await run_manager.on_llm_new_token(text, chunk=generation)
                        yield generation
            finally:
                # A break or a cancel gives the connection back now (the client's stream is
                # no async generator: this never races asyncio's closing of them at shutdown).
                await stream.aclose()
        yield closing_chunk(converter, kwargs.get("response_format"), texts)

    # -- tools and structured output -------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (functions, pydantic models, `BaseTool`s, OpenAI dicts) to the model.

        Args:
            tools: the tools.
            tool_choice: `"auto"` (the server's default), `"none"`, `"any"` / `"required"` /
                `True` (some tool must be called), a tool's name (that tool), or an
                OpenAI-style dict.
            strict: ask the server to hold the arguments to the schema exactly. None (the
                default): strict when `tool_choice` forces a call, where vLLM's guided
                decoding otherwise forces only the tool's name (ChatOpenAI sends no
                `strict` unless asked); `False` never.
            parallel_tool_calls: Llama 3.1 makes one call per turn, so off by default.
            **kwargs: other request fields to bind. A `response_format` (a pydantic class, a
                TypedDict or a JSON schema) is what the reply must follow when the model
                calls no tool, converted as ChatOpenAI converts it (strict unless
                `strict=False`).

        Returns:
            A runnable that sends the tools with every request.
        """
        bound = tool_binding(
            tools, tool_choice=tool_choice, strict=strict, parallel_tool_calls=parallel_tool_calls
        )
        if kwargs.get("response_format") is not None:
            kwargs["response_format"] = openai_response_format(
                kwargs["response_format"], strict is not False
            )
        return super().bind(**bound, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Return a runnable whose output matches `schema`.

        Args:
            schema: a pydantic class, a TypedDict, or a JSON schema dict (`json_mode` may
                omit it and get a plain dict).
            method: `"json_schema"` (default; vLLM's guided decoding holds the reply to the
                schema), `"function_calling"` (a forced tool call), or `"json_mode"` (any
                JSON object; say the keys you want in the prompt).
            include_raw: return `{"raw": AIMessage, "parsed": ..., "parsing_error": ...}`
                instead of raising on a parsing error.
            strict: with `json_schema` / `function_calling`, ask for exact schema adherence.
            tools: with `json_schema`, tools the model may call instead of answering (as
                ChatOpenAI takes them): a reply that calls one parses to None, and
                `include_raw=True` shows its `tool_calls`. With the other methods they are
                not sent, with a warning (ChatOpenAI ignores them silently).
            **kwargs: other request fields to bind.

        Returns:
            A runnable producing a pydantic instance (for a pydantic schema) or a dict.
        """
        return structured_output(
            self,
            schema,
            method=method,
            include_raw=include_raw,
            strict=strict,
            tools=tools,
            kwargs=kwargs,
        )
