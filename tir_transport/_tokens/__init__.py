"""Internal: token counts as the server counts them (import from `tir_transport`, not here).

`tokenizer` Meta's tokenizers, read from the `[tokens]` extra's files; `prompt` Llama's chat
frame as vLLM renders it, and the prompt counts.
"""
