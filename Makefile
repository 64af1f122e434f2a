# snnlstm developer commands. `make help` lists them.
# VENV may point outside the clone (CI keeps one per dependency hash).
VENV ?= .venv
PYTHON_BOOT ?= python3
RUN_DIR ?= runs
PORT ?= 5000
PYTEST_ARGS ?=

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
BIN := $(VENV)/bin
# pip on some machines warns about every missing local index folder: keep the log readable
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
STAMP := $(VENV)/.snnlstm-installed

.DEFAULT_GOAL := help
.PHONY: help install run test ui clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Reinstalls when pyproject.toml changes or when the venv's editable install
# points at another checkout (a CI venv is shared between clones).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON_BOOT) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]' $(QUIET_PIP)
	@echo "$(CURDIR)" > $(STAMP)

install: ## make the venv (VENV=.venv) and install snnlstm editable with its test extras
	@if [ -f $(STAMP) ] && [ "$$(cat $(STAMP))" != "$(CURDIR)" ]; then rm -f $(STAMP); fi
	@$(MAKE) --no-print-directory $(STAMP)

run: install ## train the default task (sine, spiking LSTM, no download); prints where the MLflow run and checkpoint are
	$(BIN)/snnlstm train experiment=paper/fig4/slstm paths.run_dir=$(RUN_DIR)

test: install ## run the test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

ui: install ## serve the MLflow dashboard of the runs folder (RUN_DIR=runs) on 127.0.0.1 (PORT=5000)
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(PORT) --workers 1 \
		--backend-store-uri sqlite:///$(abspath $(RUN_DIR))/mlflow.db \
		--default-artifact-root $(abspath $(RUN_DIR))/mlartifacts

clean: ## remove caches and build files (keeps runs/ and the venv)
	rm -rf .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
