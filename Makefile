# Two commands on a fresh machine with only Python 3.11+: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit up bench chaos schemas clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)  ## a simulated year of a demo alliance on the embedded broker and database
	$(BIN)/referralnet demo $(DEMO_ARGS)

up: $(STAMP)  ## serve the API on 127.0.0.1:8000 until Ctrl-C
	$(BIN)/referralnet up

test: lint typecheck  ## the whole suite: lint, types, unit and real-infrastructure tests
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)  ## the two fast speeds: domain (pure) and service (handlers on in-memory fakes)
	$(BIN)/pytest -q -p no:cacheprovider -m "domain or service" tests/unit tests/store/test_recorder.py

bench: $(STAMP)  ## measure against baselines and peers; writes docs/benchmarks.md and .json
	$(BIN)/python -m bench $(BENCH_ARGS)

chaos: $(STAMP)  ## 100 kill -9s, broker loss (also under traffic), forged gap, poison header; nothing lost
	$(BIN)/python -m bench.chaos --kills 100 $(CHAOS_ARGS)

schemas: $(STAMP)  ## regenerate JSON Schema and AsyncAPI from the models
	$(BIN)/python -m schemas.generate

clean:
	rm -rf $(VENV) .referralnet .pytest_cache .mypy_cache .ruff_cache
