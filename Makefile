# raygate: `make up` runs it, `make test` tests it. Both work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A small local head by default, like the guide's output; `make up UP_ARGS=` offers every CPU.
UP_ARGS ?= --num-cpus 1
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: venv up test test-deps chromium oidc-provider bench-tools lint bench profile clean

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
	@command -v nginx >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 || $(MAKE) --no-print-directory bench-tools
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

# The benchmarks compare raygate with nginx and load it with wrk, both from Debian. RUNLEVEL=1:
# the package's scripts do not start nginx's system service (the benchmarks run their own).
bench-tools:
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	else echo "error: nginx or wrk is missing and installing them needs root: apt-get install nginx wrk" >&2; exit 1; fi; \
	$$SUDO apt-get update -qq && RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nginx wrk >/dev/null

test: test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: test-deps
	$(BIN)/ruff check raygate tests benchmarks

# Every benchmarks/bench_*.py, the hot-path profile, then benchmarks/RESULTS.md (about 18 minutes).
bench: test-deps
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# Only the py-spy profile of the hot path: benchmarks/profiles/raygate-hotpath.{svg,txt}.
profile: test-deps
	$(BIN)/python benchmarks/profile_hotpath.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
