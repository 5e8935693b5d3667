# The two commands of the README: `make demo` and `make test`.
# Both create .venv with the machine's Python 3.11 and install the project into it.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test

.PHONY: demo test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/overlay sim

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check overlay daemon sim tests bench
	$(BIN)/ruff format --check overlay daemon sim tests bench

typecheck: $(STAMP)
	$(BIN)/mypy overlay daemon sim

pytest: $(STAMP)
	$(BIN)/pytest --cov=overlay --cov-report=term:skip-covered

bench: $(STAMP)
	$(BIN)/python bench/sim_scale.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage build *.egg-info
