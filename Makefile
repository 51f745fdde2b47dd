# taskstream: everything runs through uv from the lock file (uv.lock).
# `make` alone lists the targets.

.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
# uv on PATH if there is one, else the module that `pip install uv` puts beside $(PYTHON).
UV ?= $(shell uv --version >/dev/null 2>&1 && echo uv || echo "$(PYTHON) -m uv")
# Extra arguments: make run ARGS="--port 9000 --workers 2", make test ARGS="-k stream -x"
ARGS ?=
# Extra arguments of bench/fanout.py under `make bench` / `make bench-fanout`: FANOUT_ARGS="--quick"
FANOUT_ARGS ?=
# Extra arguments of bench/export.py under `make bench` / `make bench-export`: EXPORT_ARGS="--quick"
EXPORT_ARGS ?=
# Extra arguments of bench/browser.py under `make bench` / `make bench-browser`: BROWSER_ARGS="--quick"
BROWSER_ARGS ?=

.PHONY: help install run test chaos lint fmt migrate bench bench-append bench-fanout bench-export bench-browser

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: ## install uv if missing (pip install uv), then the locked dependencies into .venv
	@uv --version >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
		|| { echo "uv not found: pip install uv"; $(PYTHON) -m pip install --quiet uv; }
	$(UV) sync --frozen --compile-bytecode  # compiled once: each `taskstream` process starts seconds sooner

run: install ## start the service (embedded dev Postgres when TASKSTREAM_DATABASE_URL is unset)
	$(UV) run --frozen taskstream serve $(ARGS)

# The browser-client test drives the `eventsource` npm package, installed from its lock file.
JS_DEPS := tests/js/node_modules/.package-lock.json

$(JS_DEPS): tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then cd tests/js && npm ci --no-audit --no-fund; \
	else echo "npm not found: the EventSource test will be skipped"; fi

test: install $(JS_DEPS) ## run the test suite, but for the chaos tests
	$(UV) run --frozen pytest -m "not chaos" $(ARGS)

chaos: install ## the chaos tests: service processes and a throwaway Postgres killed and restarted (docs/reliability.md)
	$(UV) run --frozen pytest -m chaos $(ARGS)

lint: install ## ruff check, ruff format --check, mypy --strict
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy --strict service

fmt: install ## apply ruff's fixes and formatting
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

migrate: install ## apply pending migrations to TASKSTREAM_DATABASE_URL (or the embedded dev Postgres)
	$(UV) run --frozen taskstream migrate

bench: bench-append bench-fanout bench-export bench-browser ## run the four benchmarks (ARGS to append.py, FANOUT_ARGS to fanout.py, EXPORT_ARGS to export.py, BROWSER_ARGS to browser.py)

bench-append: install ## the append benchmark (bench/append.py)
	$(UV) run --frozen python bench/append.py $(ARGS)

bench-fanout: install ## the SSE fan-out benchmark (bench/fanout.py)
	$(UV) run --frozen python bench/fanout.py $(FANOUT_ARGS)

bench-export: install ## the export memory benchmark, 1,000,000 events (bench/export.py)
	$(UV) run --frozen python bench/export.py $(EXPORT_ARGS)

bench-browser: install ## the dashboard in Chromium, 1,000 tasks and 100 events/s (bench/browser.py)
	$(UV) run --frozen python bench/browser.py $(BROWSER_ARGS)
