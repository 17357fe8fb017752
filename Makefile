# paymux developer entry points. `make run` and `make test` work on a fresh machine with Python 3.11+.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck unit venv dev-venv clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "paymux needs Python 3.11 or newer (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

venv: $(VENV)/.installed
dev-venv: $(VENV)/.installed-dev

## run: set up, migrate the embedded SQLite database, seed the demo tenant and serve on http://$(HOST):$(PORT)
run: venv
	$(BIN)/paymux demo --host $(HOST) --port $(PORT)

## test: set up, lint, type-check and run every test (again on PostgreSQL + Redis when PAYMUX_TEST_DATABASE_URL is set)
test: dev-venv lint typecheck unit

lint: dev-venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: dev-venv
	$(BIN)/mypy

unit: dev-venv
	$(BIN)/pytest
	@if [[ -n "$${PAYMUX_TEST_DATABASE_URL:-}" ]]; then \
		echo "== the suite again on PostgreSQL ($${PAYMUX_TEST_DATABASE_URL}) and Redis ($${PAYMUX_TEST_REDIS_URL:-in-process})"; \
		PAYMUX_TEST_BACKEND=postgres $(BIN)/pytest; \
	fi

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
