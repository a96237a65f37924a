"""LlamaIndex integration for E2E Networks TIR chat models.

Needs `pip install "tir-llama[llama-index]"`.
"""

try:
    import llama_index.core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        'llama_index_tir needs LlamaIndex: pip install "tir-llama[llama-index]"'
    ) from e

__all__: list[str] = []
# TODO(issue 4): TIRLlamaLLM, a thin FunctionCallingLLM over tir_transport.
