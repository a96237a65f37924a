"""LangChain integration for E2E Networks TIR chat models (`pip install "tir-llama[langchain]"`)."""

try:
    import langchain_core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise ImportError('langchain_tir needs LangChain: pip install "tir-llama[langchain]"') from e

__all__: list[str] = []
# TODO(issue 3): ChatTIRLlama, a thin BaseChatModel over tir_transport.
