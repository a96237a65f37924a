"""LangChain integration for E2E Networks TIR chat, embedding and rerank models.

Needs `pip install "tir-llama[langchain]"`.
"""

try:
    import langchain_core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise ImportError('langchain_tir needs LangChain: pip install "tir-llama[langchain]"') from e

from tir_transport import Usage, track_usage
from tir_transport.adapter import UnsupportedContentError

from .chat_models import ChatTIRLlama
from .embeddings import TIREmbeddings
from .rerank import TIRRerank

__all__ = [
    "ChatTIRLlama",
    "TIREmbeddings",
    "TIRRerank",
    "UnsupportedContentError",
    "Usage",
    "track_usage",
]
