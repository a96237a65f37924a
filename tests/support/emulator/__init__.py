"""The emulator of a TIR GenAI endpoint (vLLM's wire format); see `endpoint`."""

from tests.support.emulator.endpoint import (
    DEFAULT_MODEL,
    RERANK_MODEL,
    SEED_PIECES,
    TOOLS_REJECTED,
    VLLM_FINGERPRINT,
    WAIT_SECONDS,
    Emulator,
    Reply,
    RerankReply,
    ToolEndpoint,
    embed_tokens,
    embed_vector,
    rerank_score,
    rerank_tokens,
)

__all__ = [
    "DEFAULT_MODEL",
    "RERANK_MODEL",
    "SEED_PIECES",
    "TOOLS_REJECTED",
    "VLLM_FINGERPRINT",
    "WAIT_SECONDS",
    "Emulator",
    "Reply",
    "RerankReply",
    "ToolEndpoint",
    "embed_tokens",
    "embed_vector",
    "rerank_score",
    "rerank_tokens",
]
