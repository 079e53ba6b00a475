# dqn-cli developer and user commands. `make help` lists them.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
# What the test set-up installs on top of the package: dev tools and every optional extra, so
# the suite covers them all. `make train` installs the package alone and stays quick.
EXTRAS := dev,video,atari,minatar,report,wandb,mlflow
BENCH_STAMP := $(VENV)/.bench-installed
CLUSTER_STAMP := $(VENV)/.cluster-installed
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-slow test-cluster bench bench-quick lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(RUN_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install dqn-cli with dev tools and every extra (CPU torch pinned)

train: $(RUN_STAMP) ## set up (the package alone), then train with the defaults (pass overrides: make train ARGS="algo=ddqn")
	$(BIN)/dqn-train $(ARGS)

test: $(STAMP) ## set up, then run the default test suite
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP) ## the long learning checks: default config solves CartPole on seeds 0-4
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

# Ray is the optional `ray` extra (~360 MB): installed only for these tests, under the same pin.
$(CLUSTER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS),ray]'
	touch $(CLUSTER_STAMP)

test-cluster: $(CLUSTER_STAMP) ## sweeps on a local Ray and a local SLURM (root: apt-get installs slurm-wlm, munge) (~2 min)
	$(BIN)/python -m pytest -q -m cluster $(PYTEST_ARGS)

# The peer (Stable-Baselines3) is the optional `bench` extra: installed only for benchmarking,
# under the same torch pin.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS),bench]'
	touch $(BENCH_STAMP)

# The benchmark commands and their arguments are listed once, in bench/results.py.
bench: $(BENCH_STAMP) ## benchmarks (vs Stable-Baselines3, update, buffers, ...), written to docs/benchmark-results.md (~35 min)
	$(BIN)/python -m bench.results

bench-quick: $(BENCH_STAMP) ## the same with one repeat and shorter runs, written to docs/benchmark-results-quick.md (~10 min)
	$(BIN)/python -m bench.results --quick

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check dqn_cli tests bench
	$(BIN)/ruff format --check dqn_cli tests bench
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format dqn_cli tests bench
	$(BIN)/ruff check --fix dqn_cli tests bench

clean: ## remove the virtual environment and caches (keeps outputs/)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
