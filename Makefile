# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# `make test` runs the test files in two processes (pytest-xdist, a whole file per process, the
# longest files first: tests/conftest.py); PYTEST_JOBS=0 runs them in this one process.
PYTEST_JOBS ?= 2

.PHONY: demo test lint bench clean

# The stamp files make both targets idempotent: re-install only when the dependency files change.
$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	@touch $@

demo: $(VENV)/.installed
	$(BIN)/flowtopo demo $(DEMO_ARGS)

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(PYTEST_JOBS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.flows
	$(BIN)/python -m benchmarks.topology
	$(BIN)/python -m benchmarks.alignment --jobs 2
	$(BIN)/python -m benchmarks.translation --jobs 2
	$(BIN)/python -m benchmarks.matching --jobs 2
	$(BIN)/python -m benchmarks.sweep

clean:
	rm -rf $(VENV) flowtopo-runs .pytest_cache
