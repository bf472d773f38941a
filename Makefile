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
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(VENV)/.installed
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

train: $(VENV)/.installed
	@echo "gradwise train arrives with the trainer (issue 4)." >&2; exit 2

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/optim_step.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
