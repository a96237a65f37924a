"""`TIRLlamaLLM`: E2E Networks TIR chat models as a LlamaIndex function-calling LLM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_to_completion_decorator,
    chat_to_completion_decorator,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.generic_utils import (
    messages_to_prompt as generic_messages_to_prompt,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, model_validator
from llama_index.core.constants import DEFAULT_NUM_OUTPUTS, DEFAULT_TEMPERATURE
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection

from tir_transport import (
    DEFAULT_MODEL,
    Tokenizer,
    context_window,
    count_message_tokens,
    tokenizer_for,
)
from tir_transport.adapter import TIRChatConnection, build_payload, check_single_choice

from ._convert import (
    StreamConverter,
    completion_to_response,
    message_to_wire,
    messages_to_wire,
)
from ._tools import keep_first_call, prepare_chat_with_tools, tool_selections

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["DEFAULT_CONTEXT_WINDOW", "UNKNOWN_MODEL_CONTEXT_WINDOW", "TIRLlamaLLM"]

# The window LlamaIndex sees is the one LangChain's profile reports: the model's own, from the
# core's table (Llama 3.1: 131,072), unless `context_window` says the deployment serves less
# (vLLM's max_model_len, which `tir-llama doctor` prints). A served window smaller than the
# setting shows up as ContextLengthExceededError naming the server's limit.
DEFAULT_CONTEXT_WINDOW: int = context_window(DEFAULT_MODEL) or 131_072
# LlamaIndex needs some number for a model the table does not know (LangChain leaves its
# profile unset): a small one, since LlamaIndex packs prompts up to it.
UNKNOWN_MODEL_CONTEXT_WINDOW = 8192


class TIRLlamaLLM(TIRChatConnection, FunctionCallingLLM):
    """A chat model served by E2E Networks TIR (GenAI API or a model endpoint), for LlamaIndex.

    Example:
        ```python
        from llama_index.core import Settings
        from llama_index_tir import TIRLlamaLLM

        Settings.llm = TIRLlamaLLM()  # reads TIR_API_KEY and TIR_PROJECT_ID
        print(Settings.llm.complete("Name three rivers in India."))
        ```
    """

    # model, tool_mode, top_p, frequency_penalty, presence_penalty, seed and context_window:
    # TIRChatConnection's, declared once for both chat adapters. Its temperature too, with
    # this framework's default: OpenAILike (like LlamaIndex's other OpenAI classes) sends 0.1
    # when none is set, where ChatOpenAI sends none; a program moved over samples as before.
    temperature: float | None = Field(default=DEFAULT_TEMPERATURE, ge=0)
    """Sampling temperature: 0.1 when not set, as OpenAILike's (LlamaIndex's
    `DEFAULT_TEMPERATURE`); None leaves it to the server's default (`ChatTIRLlama`'s)."""
    # These two take OpenAILike's names (ChatTIRLlama's take ChatOpenAI's other spellings too).
    max_tokens: int | None = Field(default=None, ge=1, description="Most tokens to generate.")
    stop: list[str] | None = None
    additional_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Other request fields (e.g. vLLM's top_k)."
    )
    strict: bool | None = Field(
        default=None,
        description="Send tools with `strict` (as OpenAI's `strict`), so that vLLM's guided "
        "decoding makes a forced call's arguments follow the tool's schema. None (the "
        "default): strict for a forced call (`tool_required`, a named `tool_choice`, "
        "`structured_predict`), where vLLM otherwise forces only the name; off otherwise.",
    )
    is_function_calling_model: bool = Field(
        default=True,
        description="What `metadata` reports, as OpenAILike's: False makes LlamaIndex "
        "choose its text-only paths (a ReActAgent, LLMTextCompletionProgram for structured "
        "output) and FunctionAgent refuse the model. Tools sent anyway still work.",
    )

    # Unknown arguments are request fields (or misspellings), as in ChatTIRLlama: the
    # connection model's validator moves them, after refusing peers' names and secrets.
    _request_fields: ClassVar[str | None] = "additional_kwargs"

    @model_validator(mode="before")
    @classmethod
    def _refuse_messages_to_prompt(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        # Messages go to the server as messages, and the server applies the model's chat
        # template: a messages_to_prompt would never be called, so it is refused, not ignored
        # (LlamaIndex's own default, which `dict(llm)` carries, is no choice of the user's).
        if values.get("messages_to_prompt") not in (None, generic_messages_to_prompt):
            raise ValueError(
                "TIRLlamaLLM sends chat messages as messages (the server applies Llama's chat "
                "template), so messages_to_prompt would never be used: leave it out, and shape "
                "the messages before chat(). completion_to_prompt is applied by complete()."
            )
        return values

    @model_validator(mode="after")
    def _check_config(self) -> TIRLlamaLLM:
        check_single_choice(self.additional_kwargs)  # n > 1 would bill answers never returned
        return self

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises this class under."""
        return "TIRLlamaLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """Context window, output budget and capabilities; no I/O."""
        return LLMMetadata(
            context_window=self._window(),
            num_output=self.max_tokens or DEFAULT_NUM_OUTPUTS,
            is_chat_model=True,
            is_function_calling_model=self.is_function_calling_model,
            model_name=self.model,
            system_role=MessageRole.SYSTEM,
        )

    def _window(self) -> int:
        # The setting, else the model's window from the core's table (as LangChain's profile).
        return self.context_window or context_window(self.model) or UNKNOWN_MODEL_CONTEXT_WINDOW

    # -- token counting (offline: the model's own tokenizer, see docs/tokens.md) -------------

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer as a callable, `text -> list[int]`.

        For `Settings.tokenizer`, `TokenCountingHandler(tokenizer=...)` and chat memory
        (`ChatMemoryBuffer.from_defaults(llm=llm, tokenizer_fn=llm.tokenizer)`). Exact for
        Llama 3.x and 4 with `pip install "tir-llama[tokens]"`; approximate otherwise, with
        one warning per process. Shared and loaded once: no I/O beyond reading its file.
        """
        return tokenizer_for(self.model)

    def count_message_tokens(
        self, messages: Sequence[ChatMessage], tools: Sequence[BaseTool] | None = None
    ) -> int:
        """The prompt tokens a chat request with these messages takes: never fewer than vLLM's.

        A bound on `prompt_tokens` that holds whatever order the messages are sent in and
        whichever of them are (as LangChain's `get_num_tokens_from_messages`): in the order
        given, exact but for 5 tokens when the first message is a system message and 5 more
        with tools. See docs/tokens.md.

        Args:
            messages: the conversation.
            tools: tools sent with it (as for `chat_with_tools`).

        Returns:
            The number of prompt tokens, chat template included (without the `[tokens]`
            extra: a bound, one token per UTF-8 byte of text).
        """
        wire = [message_to_wire(m) for m in messages]
        specs = (
            None
            if tools is None
            else [t.metadata.to_openai_tool(skip_length_check=True) for t in tools]
        )
        return count_message_tokens(
            self.model, wire, specs, tool_mode=self.tool_mode, any_order=True
        )

    # -- requests --------------------------------------------------------------------------

    def _payload(
        self, messages: Sequence[ChatMessage], stream: bool, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "stop": self.stop or None,
            "seed": self.seed,
            "logprobs": self.logprobs,
            "top_logprobs": self.top_logprobs if self.logprobs else None,
            **self.additional_kwargs,
            **kwargs,
        }
        model = params.pop("model", None) or self.model
        extra_body = params.pop("extra_body", None)
        return build_payload(
            messages_to_wire(messages),
            model,
            stream=stream,
            extra_body=extra_body,
            key_to_refuse=self._key_text(),
            **params,
        )

    def _chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        completion = self._client.create(self._payload(messages, False, kwargs))
        return completion_to_response(completion)

    async def _achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        completion = await self._client.acreate(self._payload(messages, False, kwargs))
        return completion_to_response(completion)

    def _stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        # Built before the generator so that bad input fails at the call, not at first next().
        payload = self._payload(messages, True, kwargs)

        def gen() -> ChatResponseGen:
            converter = StreamConverter()
            stream = self._client.stream(payload)
            try:
                for chunk in stream:
                    response = converter.convert(chunk)
                    if response is not None:
                        yield response
            finally:
                stream.close()

        return gen()

    async def _astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        payload = self._payload(messages, True, kwargs)

        async def gen() -> ChatResponseAsyncGen:
            converter = StreamConverter()
            stream = self._client.astream(payload)
            try:
                async for chunk in stream:
                    response = converter.convert(chunk)
                    if response is not None:
                        yield response
            finally:
                # A break, a cancel or the loop's end gives the connection back now. (The
                # client's stream is no async generator, so this never races asyncio's own
                # closing of generators at shutdown.)
                await stream.aclose()

        return gen()

    def _format(self, prompt: str, formatted: bool) -> str:
        # As LlamaIndex documents (and OpenAILike does): complete() applies
        # completion_to_prompt unless the prompt is formatted already.
        if formatted or self.completion_to_prompt is None:
            return prompt
        return self.completion_to_prompt(prompt)

    # -- the eight entry points: decorated once each, over the undecorated internals ----------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Send a conversation; return the reply with usage in `additional_kwargs`."""
        return self._chat(messages, **kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Stream the reply; the last response carries the server's usage."""
        return self._stream_chat(messages, **kwargs)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Complete a prompt: `completion_to_prompt(prompt)` sent as one user message.

        `formatted=True` says the prompt is formatted already: it is sent as it is.
        """
        prompt = self._format(prompt, formatted)
        return chat_to_completion_decorator(self._chat)(prompt, **kwargs)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """Stream the completion of a prompt (see `complete`)."""
        prompt = self._format(prompt, formatted)
        return stream_chat_to_completion_decorator(self._stream_chat)(prompt, **kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async twin of `chat`."""
        return await self._achat(messages, **kwargs)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """Async twin of `stream_chat`: await it to get the async generator."""
        return await self._astream_chat(messages, **kwargs)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """Async twin of `complete`."""
        prompt = self._format(prompt, formatted)
        return await achat_to_completion_decorator(self._achat)(prompt, **kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async twin of `stream_complete`: await it to get the async generator."""
        prompt = self._format(prompt, formatted)
        return await astream_chat_to_completion_decorator(self._astream_chat)(prompt, **kwargs)

    # -- tools ------------------------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Build `chat` arguments that send `tools`; the caller's history is not changed.

        `strict` (as OpenAI's LlamaIndex class takes it) overrides the `strict` field.
        """
        return prepare_chat_with_tools(
            tools,
            user_msg,
            chat_history,
            allow_parallel_tool_calls,
            tool_required,
            tool_choice,
            self.strict if strict is None else strict,
            kwargs,
        )

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Keep only the first call unless parallel calls were allowed."""
        if not allow_parallel_tool_calls:
            keep_first_call(response)
        return response

    def get_tool_calls_from_response(
        self,
        response: ChatResponse,
        error_on_no_tool_call: bool = True,
        **kwargs: Any,
    ) -> list[ToolSelection]:
        """Read the tool calls of a reply, or of a stream so far (partial JSON is tolerated).

        Raises:
            ValueError: there is no tool call and `error_on_no_tool_call` is set.
        """
        return tool_selections(response, error_on_no_tool_call, self.max_tokens)
