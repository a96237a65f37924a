"""LlamaIndex integration for E2E Networks TIR chat, embedding and rerank models.

Needs `pip install "tir-llama[llama-index]"`.
"""

try:
    import llama_index.core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        'llama_index_tir needs LlamaIndex: pip install "tir-llama[llama-index]"'
    ) from e

from tir_transport import Usage, track_usage
from tir_transport.adapter import UnsupportedContentError

from .base import DEFAULT_CONTEXT_WINDOW, TIRLlamaLLM
from .embeddings import TIREmbedding
from .rerank import TIRRerank

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "TIREmbedding",
    "TIRLlamaLLM",
    "TIRRerank",
    "UnsupportedContentError",
    "Usage",
    "track_usage",
]
