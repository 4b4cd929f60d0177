# Lectern's front door. Every target creates .venv and installs the project when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint format bench bench-api bench-compare loadtest clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m config.devstack

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) -m benchmarks.gateway --json

bench-api: $(STAMP)
	$(PY) -m benchmarks.api --json

bench-compare: $(STAMP)
	$(PY) -m benchmarks.compare

loadtest: $(STAMP)
	$(PY) -m loadtest

clean:
	rm -rf $(VENV) .lectern .pytest_cache .mypy_cache .ruff_cache
