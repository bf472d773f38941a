# The two entry points of the README's quick start. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned here, not in pyproject.toml: this file picks the CPU build that lies on this
# machine's disk; the package itself accepts a range.
TORCH_PIN := torch==2.13.0

.PHONY: test lint typecheck browser postgres train bench clean

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

# Headless Chromium, from Debian's package, for the test that opens report.html in a browser
# (tests/report/test_browser.py). Installed once; sudo is used when not running as root.
browser:
	@command -v chromium >/dev/null || { \
		SUDO=$$(test "$$(id -u)" -eq 0 || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

# PostgreSQL, from Debian's package, for the search tests that keep Optuna studies in a real
# server (tests/postgres_server.py starts a throwaway one on 127.0.0.1 and stops it after).
# Installed once, when no server binary is found; sudo is used when not running as root.
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null || { \
		SUDO=$$(test "$$(id -u)" -eq 0 || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql; }

test: lint typecheck browser postgres
	$(BIN)/python -m pytest

# The main job: with no config, a He-initialized 1-D CNN on MNIST-1D (about 15 s on 2 cores).
train: $(VENV)/.installed
	$(BIN)/gradwise train

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/optim_step.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
