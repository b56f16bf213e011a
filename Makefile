# raygate: `make up` runs it, `make test` tests it. Both work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A small local head by default, like the guide's output; `make up UP_ARGS=` offers every CPU.
UP_ARGS ?= --num-cpus 1
PYTEST_ARGS ?=

.PHONY: venv up test test-deps lint bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[ray]'
	touch $@

up: venv
	$(BIN)/raygate up $(UP_ARGS)

test-deps: $(VENV)/.test-installed

$(VENV)/.test-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

test: test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: test-deps
	$(BIN)/ruff check raygate tests benchmarks

bench: test-deps
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
