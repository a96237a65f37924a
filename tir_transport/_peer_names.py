"""The peers' constructor arguments that mean nothing here, and what to do instead.

Read from the peers' own fields: langchain_openai's `ChatOpenAI` and `OpenAIEmbeddings`,
llama_index's `OpenAILike` and `OpenAILikeEmbedding`. `_arguments` refuses each with its
message, unless its value asks for what happens here anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PEER_NAMES", "PeerName"]


@dataclass(frozen=True, slots=True)
class PeerName:
    """A peer's argument that means nothing here: refused, unless given a value we match."""

    peers: str
    """Whose argument it is, for the message ("ChatOpenAI's", "OpenAILike's")."""
    instead: str
    """What to do instead (a sentence)."""
    harmless: tuple[Any, ...] = ()
    """Values that ask for what happens here anyway (`is_chat_model=True`): accepted, unused."""

    def accepts(self, value: Any) -> bool:
        """Whether `value` asks for what happens here anyway (type and value both match)."""
        # `False == 0` and `0 == False`: compare the type too, so that only the very value passes.
        return any(type(value) is type(h) and value == h for h in self.harmless)


_NO_SDK = (
    "the TIR adapters do not use the openai SDK: pass your own httpx client as http_client "
    "(sync) / http_async_client (async) for a proxy, a CA or mTLS"
)
_OPENAI_ONLY = (
    "is an OpenAI platform setting the TIR endpoint (vLLM serving Llama) has none of: leave "
    "it out (a request field for another server goes in model_kwargs / additional_kwargs)"
)
_AZURE = "is Azure OpenAI's; TIR's API has no versions or API types: leave it out"
_TOKENIZER = (
    "tokens are counted with the model's own tokenizer (get_num_tokens / llm.tokenizer), and "
    "text is sent as text, never as tiktoken ids: leave it out"
)
_CONTEXT = (
    "a text longer than the model's window fails with ContextLengthExceededError naming it; "
    "truncate_prompt_tokens lets the server cut it instead"
)
_OTHER_FIELDS = (
    "other request fields go in model_kwargs (ChatTIRLlama) or additional_kwargs "
    "(TIRLlamaLLM); an embeddings or rerank request takes no others (dimensions, "
    "encoding_format and truncate_prompt_tokens are arguments of their own)"
)

# The peers' arguments with no meaning here (see module docstring). Read from the peers'
# own fields: langchain_openai's ChatOpenAI and OpenAIEmbeddings, llama_index's OpenAILike
# and OpenAILikeEmbedding. A name that is a field or alias of a class is never looked up.
PEER_NAMES: dict[str, PeerName] = {
    # -- ChatOpenAI / OpenAIEmbeddings -----------------------------------------------------
    "openai_organization": PeerName(
        "ChatOpenAI's",
        "TIR has no organisations: the project is project_id (or TIR_PROJECT_ID)",
        (None,),
    ),
    "organization": PeerName(
        "ChatOpenAI's",
        "TIR has no organisations: the project is project_id (or TIR_PROJECT_ID)",
        (None,),
    ),
    "openai_proxy": PeerName(
        "ChatOpenAI's",
        "pass http_client=httpx.Client(proxy=...) (and http_async_client=httpx.AsyncClient("
        "proxy=...)), or set HTTPS_PROXY",
        (None, ""),
    ),
    "openai_api_version": PeerName("OpenAIEmbeddings'", _AZURE, (None, "")),
    "api_version": PeerName("OpenAILike's", _AZURE, (None, "")),
    "openai_api_type": PeerName("OpenAIEmbeddings'", _AZURE, (None, "")),
    "deployment": PeerName(
        "OpenAIEmbeddings'",
        "is Azure's deployment name; here the model is model=... (its API name on TIR), and a "
        "self-deployed model endpoint is endpoint_id=...",
    ),
    "client": PeerName("ChatOpenAI's", _NO_SDK, (None,)),
    "async_client": PeerName("ChatOpenAI's", _NO_SDK, (None,)),
    "root_client": PeerName("ChatOpenAI's", _NO_SDK, (None,)),
    "root_async_client": PeerName("ChatOpenAI's", _NO_SDK, (None,)),
    "openai_client": PeerName("OpenAILike's", _NO_SDK, (None,)),
    "async_openai_client": PeerName("OpenAILike's", _NO_SDK, (None,)),
    "http_socket_options": PeerName(
        "ChatOpenAI's",
        "pass http_client=httpx.Client(transport=httpx.HTTPTransport(socket_options=...))",
        (None,),
    ),
    "default_query": PeerName(
        "ChatOpenAI's",
        "the URL's only query parameter is project_id: pass project_id=... (or "
        "default_query={'project_id': ...} alone) and it is added for you; a gateway's own "
        "parameters need your own http_client",
        (None,),
    ),
    "stream_chunk_timeout": PeerName(
        "ChatOpenAI's", "timeout applies between two stream chunks too: set timeout", (None,)
    ),
    "tiktoken_model_name": PeerName("ChatOpenAI's", _TOKENIZER, (None,)),
    "tiktoken_enabled": PeerName("OpenAIEmbeddings'", _TOKENIZER, (False,)),
    "allowed_special": PeerName("OpenAIEmbeddings'", _TOKENIZER, (None,)),
    "disallowed_special": PeerName("OpenAIEmbeddings'", _TOKENIZER, (None,)),
    "check_embedding_ctx_length": PeerName("OpenAIEmbeddings'", _CONTEXT, (False,)),
    "embedding_ctx_length": PeerName("OpenAIEmbeddings'", _CONTEXT),
    "chunk_size": PeerName(
        "OpenAIEmbeddings'",
        "texts per request are batch_size (TIREmbeddings) / embed_batch_size (TIREmbedding)",
    ),
    "headers": PeerName(
        "OpenAIEmbeddings'", "headers sent with every request are default_headers", (None,)
    ),
    # Cosmetic: a program that asked for a bar runs the same without one (refused, it failed
    # at construction for no harm done).
    "show_progress_bar": PeerName(
        "OpenAIEmbeddings'", "there is no progress bar: leave it out", (False, True)
    ),
    "skip_empty": PeerName(
        "OpenAIEmbeddings'",
        "an empty text is refused with InputError before anything is sent: drop empty texts first",
        (False,),
    ),
    "retry_min_seconds": PeerName(
        "OpenAIEmbeddings'",
        "retries wait as the server's Retry-After says, else a short back-off; max_retries "
        "says how many",
    ),
    "retry_max_seconds": PeerName(
        "OpenAIEmbeddings'",
        "retries wait as the server's Retry-After says, else a short back-off; max_retries "
        "says how many",
    ),
    "include_response_headers": PeerName(
        "ChatOpenAI's",
        "response headers are not returned; the request id is on every error (request_id)",
        (False,),
    ),
    "disabled_params": PeerName("ChatOpenAI's", _OPENAI_ONLY, (None,)),
    "use_responses_api": PeerName(
        "ChatOpenAI's",
        "TIR serves the chat completions API only (/v1/chat/completions)",
        (None, False),
    ),
    "use_previous_response_id": PeerName(
        "ChatOpenAI's", "TIR serves the chat completions API only", (False,)
    ),
    "reasoning_effort": PeerName("ChatOpenAI's", _OPENAI_ONLY, (None,)),
    "reasoning": PeerName("ChatOpenAI's", _OPENAI_ONLY, (None,)),
    "verbosity": PeerName("ChatOpenAI's", _OPENAI_ONLY, (None,)),
    "service_tier": PeerName("ChatOpenAI's", _OPENAI_ONLY, (None,)),
    "store": PeerName("ChatOpenAI's", _OPENAI_ONLY, (None,)),
    "truncation": PeerName("ChatOpenAI's", _OPENAI_ONLY, (None,)),
    "include": PeerName("ChatOpenAI's", _OPENAI_ONLY, (None,)),
    "context_management": PeerName("ChatOpenAI's", _OPENAI_ONLY, (None,)),
    "prompt_cache_options": PeerName("ChatOpenAI's", _OPENAI_ONLY, (None,)),
    # -- OpenAILike / OpenAILikeEmbedding --------------------------------------------------
    "is_chat_model": PeerName(
        "OpenAILike's",
        "TIR serves chat completions only, so the model is always a chat model (complete() "
        "sends the prompt as one user message): leave it out",
        (True,),
    ),
    "is_function_calling_model": PeerName(
        "OpenAILike's",
        "TIRLlamaLLM takes it; in LangChain, tools are bind_tools(...) and tool_mode says how "
        "they are sent",
        (True,),
    ),
    "reuse_client": PeerName(
        "OpenAILike's",
        "connections are always pooled and reused (per event loop, for async): leave it out",
        (True,),
    ),
    "strict": PeerName(
        "OpenAILike's",
        "ChatTIRLlama takes it per binding, bind_tools(..., strict=...); a call that "
        "tool_choice forces is sent strict already (TIRLlamaLLM takes it as a field)",
    ),
    "should_use_structured_outputs": PeerName(
        "OpenAILike's",
        "structured_predict goes through tool calling (or the prompt, for an endpoint without "
        "tools): leave it out",
        (False,),
    ),
    "modalities": PeerName(
        "OpenAILike's", "Llama 3.1 on TIR takes and gives text only: leave it out", (None,)
    ),
    "audio_config": PeerName(
        "OpenAILike's", "Llama 3.1 on TIR takes and gives text only: leave it out", (None,)
    ),
    "tokenizer": PeerName(
        "OpenAILike's",
        "TIRLlamaLLM counts with the model's own tokenizer (llm.tokenizer): leave it out",
        (None,),
    ),
    "mode": PeerName(
        "OpenAIEmbedding's",
        "TIR's embeddings API has no search modes: a query and a document are told apart by "
        "query_prefix and document_prefix (e5 models want 'query: ' and 'passage: ')",
        ("text_search",),
    ),
    "n": PeerName(
        "ChatOpenAI's",
        "one answer per request here (each of n is billed): for several, send the prompt "
        "several times, batch([prompt] * n)",
        (1, None),
    ),
    "model_kwargs": PeerName("ChatOpenAI's", _OTHER_FIELDS, ({},)),
    "additional_kwargs": PeerName("OpenAILike's", _OTHER_FIELDS, ({},)),
}
