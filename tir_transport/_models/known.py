"""What is known of TIR GenAI text models by API name; any other name works too."""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["KNOWN_CONTEXT_WINDOWS", "TokenizerFamily", "context_window", "tokenizer_family"]

# The models' own context windows (tokens): the one table both adapters report from
# (LangChain's profile `max_input_tokens`, LlamaIndex's `metadata.context_window`). A TIR
# deployment may serve less (vLLM's max_model_len, which `tir-llama doctor` prints); the
# adapters' `context_window` setting overrides the table for such a deployment.
# A model not listed still works by its API name; its window is simply unknown.
KNOWN_CONTEXT_WINDOWS: dict[str, int] = {
    "llama3_1_8b_instruct": 131_072,
    "llama_4_scout_17b_16e_instruct": 131_072,
    "deepseek_v3": 131_072,
}

TokenizerFamily = Literal["llama3", "llama4"]

# API names spell versions many ways (llama3_1_8b_instruct, llama_4_scout..., a self-deployed
# endpoint's meta-llama/Llama-3.1-8B-Instruct): compare with separators removed.
_LLAMA_VERSION = re.compile(r"(?<![a-z])llama[\W_]*([34])(?!\d)")


def context_window(model: str) -> int | None:
    """The known context window of a GenAI model's API name, or None when unknown."""
    return KNOWN_CONTEXT_WINDOWS.get(model)


def tokenizer_family(model: str) -> TokenizerFamily | None:
    """Which of Meta's tokenizers a model name uses, or None when it is not a Llama 3 or 4.

    Llama 3, 3.1, 3.2 and 3.3 share one tokenizer (128,000 BPE tokens + 256 special);
    Llama 4 has its own (200,000 + 1,135 special).
    """
    # "llama" then the major version, not followed by another digit: llama3_1, Llama-3.3,
    # llama4, but not codellama_34b or llama_30b (Llama 2 and 1 tokenizers).
    found = _LLAMA_VERSION.search(model.lower())
    if found is None:
        return None
    return "llama4" if found.group(1) == "4" else "llama3"
