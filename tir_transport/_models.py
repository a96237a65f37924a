"""What is known of TIR GenAI text models by API name; any other name works too."""

from __future__ import annotations

__all__ = ["KNOWN_CONTEXT_WINDOWS", "context_window"]

# The models' own context windows (tokens). A TIR deployment may serve less (vLLM's
# max_model_len), so these feed LangChain's profile as an upper bound, never as a promise.
# A model not listed still works by its API name; its window is simply unknown.
KNOWN_CONTEXT_WINDOWS: dict[str, int] = {
    "llama3_1_8b_instruct": 131_072,
    "llama_4_scout_17b_16e_instruct": 131_072,
    "deepseek_v3": 131_072,
}


def context_window(model: str) -> int | None:
    """The known context window of a GenAI model's API name, or None when unknown."""
    return KNOWN_CONTEXT_WINDOWS.get(model)
