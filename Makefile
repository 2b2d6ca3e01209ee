# Two commands: `make run` serves on ./data, `make test` runs lint, types and the test-suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The suite runs twice, on SQLite and on PostgreSQL, both at once (pytest-xdist workers in each; the
# tests mostly wait on timers, so more workers than cores pay). Without a PostgreSQL server at
# BOT_TEST_DATABASE_URL the second half is skipped, saying so.
BOT_TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
WORKERS ?= 3

.PHONY: run test lint typecheck pytest pytest-sqlite pytest-postgres bench clean

# Bytecode caches on, even where PYTHONDONTWRITEBYTECODE is set: without them every xdist worker and
# every run.py the tests start compiles bot/ again, and pytest rewrites every test module's asserts
# again (about 4 s of CPU per process).
pytest pytest-sqlite pytest-postgres: export PYTHONDONTWRITEBYTECODE :=

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python run.py

lint: $(STAMP)
	$(BIN)/ruff check bot tests run.py $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	@$(MAKE) --no-print-directory --output-sync=target -j2 pytest-sqlite pytest-postgres

pytest-sqlite: $(STAMP)
	@echo "== tests on SQLite"
	env -u BOT_TEST_DATABASE_URL $(BIN)/python -m pytest -q -n $(WORKERS)

pytest-postgres: $(STAMP)
	@echo "== tests on PostgreSQL ($(BOT_TEST_DATABASE_URL))"
	BOT_TEST_DATABASE_URL='$(BOT_TEST_DATABASE_URL)' $(BIN)/python -m pytest -q -n $(WORKERS)

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
