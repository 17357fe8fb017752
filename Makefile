# paymux developer entry points. `make run` and `make test` work on a fresh machine with Python 3.11+.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck unit venv dev-venv clean bench bench-quick bench-soak bench-interleaved

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

# With PAYMUX_TEST_DATABASE_URL set, the SQLite and the PostgreSQL + Redis passes run side by side, and the SQLite
# pass's output follows the PostgreSQL pass's. They share nothing: the Redis tests run in the PostgreSQL pass only
# (its teardowns flush the Redis database, which would wipe the other pass's counters mid-test).
unit: dev-venv
	@if [[ -z "$${PAYMUX_TEST_DATABASE_URL:-}" ]]; then \
		$(BIN)/pytest; \
	else \
		echo "== the suite on SQLite and, side by side, on PostgreSQL ($${PAYMUX_TEST_DATABASE_URL}) and Redis ($${PAYMUX_TEST_REDIS_URL:-in-process})"; \
		log=$$(mktemp); \
		env -u PAYMUX_TEST_REDIS_URL $(BIN)/pytest > "$$log" 2>&1 & lite=$$!; \
		PAYMUX_TEST_BACKEND=postgres $(BIN)/pytest; postgres=$$?; \
		wait $$lite; sqlite=$$?; \
		echo "== the SQLite pass"; cat "$$log"; rm -f "$$log"; \
		echo "== SQLite pass exit $$sqlite, PostgreSQL pass exit $$postgres"; \
		[[ $$sqlite -eq 0 && $$postgres -eq 0 ]]; \
	fi

# The benchmarks need PostgreSQL and Redis (PAYMUX_BENCH_DATABASE_URL, PAYMUX_BENCH_REDIS_URL; defaults: database
# paymux_bench on 127.0.0.1, Redis db 12) and Node.js for the load generator. See docs/benchmarks.md.
## bench: the full benchmark suite (about 10 minutes); bench-quick: about a minute; bench-soak: 10 minutes at 50%
## bench-interleaved: create PaymentIntent and the baseline measured in turns, both layouts (about 5 minutes)
bench: dev-venv
	$(BIN)/python bench/suite.py

bench-quick: dev-venv
	$(BIN)/python bench/suite.py --quick

bench-soak: dev-venv
	$(BIN)/python bench/suite.py --soak

bench-interleaved: dev-venv
	$(BIN)/python bench/suite.py --interleaved

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
