# Two commands for a fresh machine:
#   make up     set up, train on generated demo data, serve the suite, print a recommendation
#   make test   set up, check the stubs, lint, type-check, run every test (what CI runs)
# and while working: make test-unit (lint, type-check and the unit tests: about a minute)
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: up test test-unit lint install redis protos clean

up: $(STAMP)
	$(BIN)/recsys up

test: lint redis
	RECSYS_REQUIRE_REDIS=1 $(BIN)/pytest -q

# Without the integration tests (real servers and processes) and the slow ones (Keras training):
# tests/conftest.py says which modules are which.
test-unit: lint
	$(BIN)/pytest -q -m "not integration and not slow"

lint: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The Redis online-store tests start their own redis-server; Debian's package provides the binary.
redis:
	@command -v redis-server >/dev/null || { \
		$(SUDO) apt-get install -y -q redis-server >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q redis-server; }; }

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) .recsys .pytest_cache .mypy_cache .ruff_cache
