# raygate: `make up` runs it, `make test` tests it. Both work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A small local head by default, like the guide's output; `make up UP_ARGS=` offers every CPU.
UP_ARGS ?= --num-cpus 1
PYTEST_ARGS ?=

.PHONY: venv up test test-deps chromium oidc-provider lint bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[ray]'
	touch $@

up: venv
	$(BIN)/raygate up $(UP_ARGS)

OIDC_PROVIDER := tests/fixtures/oidc/node_modules/.installed

test-deps: $(VENV)/.test-installed $(OIDC_PROVIDER)

$(VENV)/.test-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@command -v chromium >/dev/null 2>&1 || $(MAKE) --no-print-directory chromium
	touch $@

# The SSO tests run a real OpenID provider (npm's oidc-provider) with Node.js, pinned by its
# package-lock.json.
oidc-provider: $(OIDC_PROVIDER)

$(OIDC_PROVIDER): tests/fixtures/oidc/package-lock.json
	@command -v npm >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; }
	cd tests/fixtures/oidc && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser tests drive Debian's Chromium (Playwright's own browser download is not used).
chromium:
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	else echo "error: chromium is missing and installing it needs root: apt-get install chromium" >&2; exit 1; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null

test: test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: test-deps
	$(BIN)/ruff check raygate tests benchmarks

bench: test-deps
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
