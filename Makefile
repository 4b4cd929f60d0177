# Lectern's front door. Every target creates .venv and installs the project when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lock install run test lint format bench bench-api bench-compare loadtest clean

LOCK := requirements.lock

# The lock pins every package a fresh machine installs to the versions CI tested.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

# Refresh the lock: resolve pyproject.toml afresh in a throwaway venv and record every version.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q -e '.[dev]'
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^lectern' > $(LOCK)
	rm -rf .lock-venv

install: $(STAMP)

run: $(STAMP)
	$(PY) -m config.devstack

# One pytest-xdist worker per core (at most 4), each with its own servers on free ports; the
# browser tests stay together on one worker (tests/conftest.py). `PYTEST_ARGS="-n 0"` runs serially.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/bandit -c pyproject.toml -q -r gateway api workers config
	$(PY) .ci/sizes.py
	$(PY) .ci/audit.py

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
