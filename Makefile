# failsafe: project tasks. Only python3 and make are needed to start; `make venv` does the rest.
#
#   make venv       create .venv and install the package with all extras (-e '.[dev]')
#   make test       start servers, lint, typecheck, build docs, run the test suite
#   make lint       ruff check
#   make typecheck  mypy --strict (config in pyproject.toml)
#   make docs       mkdocs build --strict into site/
#   make demo       play the order flow and the payment flow on real processes (examples/*: demo)
#   make bench      run the benchmarks (python -m bench)
#   make services   start the local servers the tests use (Redis, PostgreSQL, RabbitMQ)
#   make clean      remove build outputs and caches (keeps .venv)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

LINT_PATHS := src tests bench examples

# Pass CI through to every recipe (and to scripts/services, which is stricter under CI=true).
ifdef CI
export CI
endif

.PHONY: venv demo test services lint typecheck docs screenshots bench clean

venv: $(STAMP)

# Re-installs only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

demo: venv
	$(BIN)/python -m examples.warehouse_flow demo
	$(BIN)/python -m examples.payment_flow demo

services:
	bash scripts/services

test: venv
	bash scripts/services
	bash scripts/browser
	$(MAKE) --no-print-directory lint typecheck docs
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)

typecheck: venv
	$(BIN)/mypy --strict

docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

screenshots: venv
	$(BIN)/python scripts/screenshots.py

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf site build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -type d \( -name __pycache__ -o -name '*.egg-info' \) -print0 \
		| xargs -0 rm -rf
