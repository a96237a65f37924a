"""`ChatTIRLlama`: E2E Networks TIR chat models as a LangChain chat model."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
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
from langchain_core.output_parsers.base import OutputParserLike
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import AliasChoices, BaseModel, Field

from tir_transport import (
    ChatCompletion,
    context_window,
    count_message_tokens,
    tokenizer_for,
)
from tir_transport.adapter import TIRChatConnection, build_payload

from ._convert import (
    PROVIDER,
    StreamConverter,
    completion_to_message,
    message_to_wire,
    messages_to_wire,
)
from ._errors import InvalidToolChoiceError, langchain_errors
from ._parsers import WholeJsonOutputParser, WholePydanticOutputParser

__all__ = ["ChatTIRLlama"]


def _tool_choice(tool_choice: Any) -> Any:
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


def _pydantic_class(value: Any) -> bool:
    return isinstance(value, type) and is_basemodel_subclass(value)


def _response_format(schema: Any, strict: bool | None) -> dict[str, Any]:
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


def _parse(schema: type[BaseModel], message: AIMessage) -> BaseModel | None:
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
        default=None, validation_alias=AliasChoices("max_tokens", "max_completion_tokens")
    )
    """Most tokens to generate (also taken as ChatOpenAI's `max_completion_tokens`)."""
    stop: list[str] | str | None = Field(default=None, alias="stop_sequences")
    """Where to stop generating: a list of strings, or one (as ChatOpenAI takes it)."""

    streaming: bool = False
    """Stream internally even on `invoke` (callbacks then see every token)."""
    stream_usage: bool = True
    """Ask for the usage chunk at the end of a stream."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Other request fields, sent as they are. Unknown constructor arguments land here, with
    a warning that names them (a likely misspelling of a field is an error instead); a field
    of this class given here too is an error."""
    extra_body: dict[str, Any] | None = None
    """vLLM's extra fields (`top_k`, `repetition_penalty`, ...), merged in last."""

    # As ChatOpenAI does: unknown arguments are request fields, not silently dropped (the
    # connection model's validator moves them, after refusing peers' names and secrets).
    _request_fields: ClassVar[str | None] = "model_kwargs"

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
        profile = ModelProfile(
            text_inputs=True,
            image_inputs=False,
            image_url_inputs=False,
            pdf_inputs=False,
            audio_inputs=False,
            video_inputs=False,
            image_tool_message=False,
            pdf_tool_message=False,
            text_outputs=True,
            tool_calling=True,
            tool_choice=True,
            tool_call_streaming=True,
            structured_output=True,
            temperature=True,
        )
        # Unknown models work too; their window is left unset rather than guessed.
        known = context_window(self.model)
        if known is not None:
            profile["open_weights"] = True
        window = self.context_window or known
        if window is not None:
            profile["max_input_tokens"] = window
        return profile

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
            params["tool_choice"] = _tool_choice(params["tool_choice"])
        if _pydantic_class(params.get("response_format")):
            params["response_format"] = _response_format(params["response_format"], True)
        return build_payload(
            messages_to_wire(messages),
            model,
            stream=stream,
            include_usage=bool(params.pop("stream_usage", self.stream_usage)),
            extra_body=extra_body,
            key_to_refuse=self._key_text(),
            **params,
        )

    def _result(self, completion: ChatCompletion, schema: Any = None) -> ChatResult:
        message = completion_to_message(completion)
        if _pydantic_class(schema):
            message.additional_kwargs["parsed"] = _parse(schema, message)
        generation_info = {"finish_reason": completion.finish_reason}
        llm_output: dict[str, Any] = {
            "model_name": completion.model or self.model,
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

    def _combine_llm_outputs(self, llm_outputs: list[dict[str, Any] | None]) -> dict[str, Any]:
        # `generate` over several inputs, as ChatOpenAI combines them: the token usage of all
        # of them summed field by field (the nested `prompt_tokens_details` too), the model,
        # and the first `system_fingerprint`. Streamed outputs are None: usage stays {}.
        usage: dict[str, Any] = {}
        model_name: Any = None
        fingerprint: Any = None
        for output in llm_outputs:
            if not output:
                continue
            usage = _add_usage(usage, output.get("token_usage") or {})
            model_name = model_name or output.get("model_name")
            fingerprint = fingerprint or output.get("system_fingerprint")
        combined: dict[str, Any] = {"token_usage": usage, "model_name": model_name or self.model}
        if fingerprint:
            combined["system_fingerprint"] = fingerprint
        return combined

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
        return self._result(completion, kwargs.get("response_format"))

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
        return self._result(completion, kwargs.get("response_format"))

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
                        texts.append(message.text)
                        generation = ChatGenerationChunk(message=message)
                        if run_manager:
                            run_manager.on_llm_new_token(message.text, chunk=generation)
                        yield generation
            finally:
                stream.close()
        yield self._last(converter, kwargs.get("response_format"), texts)

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
                        texts.append(message.text)
                        generation = ChatGenerationChunk(message=message)
                        if run_manager:
                            await run_manager.on_llm_new_token(message.text, chunk=generation)
                        yield generation
            finally:
                # A break or a cancel gives the connection back now (the client's stream is
                # no async generator: this never races asyncio's closing of them at shutdown).
                await stream.aclose()
        yield self._last(converter, kwargs.get("response_format"), texts)

    def _last(
        self, converter: StreamConverter, schema: Any, texts: list[str]
    ) -> ChatGenerationChunk:
        message = converter.last()
        if _pydantic_class(schema) and not converter.seen_calls:
            # The whole reply's parse, on the closing chunk, as ChatOpenAI gives it.
            message.additional_kwargs["parsed"] = _parse(schema, AIMessage("".join(texts)))
        info = {"finish_reason": converter.finish_reason} if converter.finish_reason else None
        return ChatGenerationChunk(message=message, generation_info=info)

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
            **kwargs: other request fields to bind.

        Returns:
            A runnable that sends the tools with every request.
        """
        choice = _tool_choice(tool_choice)
        if strict is None and choice not in (None, "auto", "none"):
            # A forced call: without strict, vLLM forces the name and lets the model write
            # any JSON as the arguments (a small model writes the schema itself).
            strict = True
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
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
                stacklevel=2,
            )
            tools = None
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        if schema is not None:
            # For tracing; langchain-core reads its "schema", so without one it is left out.
            kwargs["ls_structured_output_format"] = {
                "kwargs": {"method": method, "strict": strict},
                "schema": convert_to_json_schema(schema),
            }
        llm: Runnable[LanguageModelInput, BaseMessage]
        parser: OutputParserLike[Any]
        if method == "function_calling":
            assert schema is not None
            tool_name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools(
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
                response_format = _response_format(schema, strict)
            else:
                response_format = {"type": "json_object"}
            if tools:
                kwargs["tools"] = [convert_to_openai_tool(t, strict=strict) for t in tools]
            llm = self.bind(response_format=response_format, **kwargs)
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
        return RunnableMap(raw=llm) | parsed.with_fallbacks(
            [fallback], exception_key="parsing_error"
        )
