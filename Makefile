# The two commands the README starts with. Both work on a fresh machine with nothing but Python 3.10+.
#   make demo   installs evoforge in .venv, evolves an attention kernel on the defaults, writes its report
#   make test   installs the test dependencies in .venv and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# With no NVIDIA driver, pin the CPU build CI uses; with one, keep (or get) a CUDA build.
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.4' || echo 'torch==2.13.0')

.PHONY: demo test install install-test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[triton,report]"

install-test: install
	$(BIN)/python -m pip install -q -e ".[test]"

demo: install
	$(BIN)/evoforge run
	$(BIN)/evoforge report latest

test: install-test
	$(BIN)/python -m pytest -q

lint: install-test
	$(BIN)/ruff check src tests benchmarks experiments

clean:
	rm -rf $(VENV) evidence .pytest_cache
