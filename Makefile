# dqn-cli developer and user commands. `make help` lists them.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-slow lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,video]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install dqn-cli with its dev tools and video extra (CPU torch pinned)

train: $(STAMP) ## set up, then train with the defaults (pass overrides: make train ARGS="algo=ddqn")
	$(BIN)/dqn-train $(ARGS)

test: $(STAMP) ## set up, then run the default test suite
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP) ## the long learning checks: default config solves CartPole on seeds 0-4
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check dqn_cli tests bench
	$(BIN)/ruff format --check dqn_cli tests bench
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format dqn_cli tests bench
	$(BIN)/ruff check --fix dqn_cli tests bench

clean: ## remove the virtual environment and caches (keeps outputs/)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
