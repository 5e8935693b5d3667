# The two commands of the README: `make demo` and `make test`.
# Both create .venv with the machine's Python 3.11 and install the project into it.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test

.PHONY: demo test test-long lint typecheck pytest bench clean fault-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/overlay sim

test: $(STAMP) fault-deps lint typecheck pytest

# The fault suite (tests/faults/) drops packets with nftables inside network
# namespaces of its own (iproute2). As root (CI is), install what is missing,
# and only then; otherwise those tests skip and say why.
fault-deps:
	@if [ "$$(id -u)" = 0 ]; then \
		missing=""; \
		command -v nft >/dev/null 2>&1 || missing="$$missing nftables"; \
		command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
		if [ -n "$$missing" ]; then \
			echo "installing$$missing for the fault tests"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y -qq $$missing >/dev/null 2>&1 || \
			{ apt-get update -qq >/dev/null && apt-get install -y -qq $$missing >/dev/null; } || \
			echo "could not install$$missing: the fault tests will skip"; \
		fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check overlay daemon sim tests bench
	$(BIN)/ruff format --check overlay daemon sim tests bench

typecheck: $(STAMP)
	$(BIN)/mypy overlay daemon sim

pytest: $(STAMP)
	$(BIN)/pytest --cov=overlay --cov-report=term:skip-covered

# Tests too long for every run (1,000-node partition heals: ~15 minutes).
test-long: $(STAMP)
	$(BIN)/pytest -m long

bench: $(STAMP)
	$(BIN)/python bench/sim_scale.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage build *.egg-info
