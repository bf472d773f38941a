# The two entry points of the README's quick start. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned here, not in pyproject.toml: this file picks the CPU build that lies on this
# machine's disk; the package itself accepts a range.
TORCH_PIN := torch==2.13.0

.PHONY: test lint typecheck train bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(VENV)/.installed
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

# The main job: with no config, a He-initialized 1-D CNN on MNIST-1D (about 15 s on 2 cores).
train: $(VENV)/.installed
	$(BIN)/gradwise train

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/optim_step.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
