# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# torch comes in first, pinned to the CPU wheel, so that no later requirement can pull a CUDA build.
TORCH   := torch==2.13.0

.PHONY: demo demo-record test check format install install-test clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH) -e '.[all]'
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH) -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/lmfuse demo

# Re-record the demo (benchmarks/demo/) and regenerate README's demo table from it (tests check both).
demo-record: install
	HF_HUB_OFFLINE=1 $(BIN)/lmfuse demo --record benchmarks/demo/recorded.json --overwrite --plot-dir benchmarks/demo
	$(BIN)/python scripts/demo_readme.py benchmarks/demo/recorded.json README.md

test: install-test
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

check: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
