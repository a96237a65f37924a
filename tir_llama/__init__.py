"""The `tir-llama` command line: `doctor`, `chat`, `batch` (above every other package).

`tir_transport` (the core) and the adapters never import it; `batch` imports `ray_tir` only
when it runs.
"""
