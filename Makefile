# snnlstm developer commands. `make help` lists them.
# VENV may point outside the clone (CI keeps one per dependency hash).
VENV ?= .venv
PYTHON_BOOT ?= python3
RUN_DIR ?= runs
PORT ?= 5000
PYTEST_ARGS ?=
# test processes (pytest-xdist; 0: run in this one): whole files per process, so a file's fixtures are built once
TEST_WORKERS ?= auto

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
BIN := $(VENV)/bin
# pip on some machines warns about every missing local index folder: keep the log readable
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
STAMP := $(VENV)/.snnlstm-installed

.DEFAULT_GOAL := help
.PHONY: help install run test report gpu-check gpu-wheels ui clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Reinstalls when pyproject.toml changes or when the venv's editable install
# points at another checkout (a CI venv is shared between clones).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON_BOOT) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]' $(QUIET_PIP)
	@echo "$(CURDIR)" > $(STAMP)

install: ## make the venv (VENV=.venv) and install snnlstm editable with the app and test extras, at constraints.txt's versions
	@if [ -f $(STAMP) ] && [ "$$(cat $(STAMP))" != "$(CURDIR)" ]; then rm -f $(STAMP); fi
	@$(MAKE) --no-print-directory $(STAMP)

run: install ## train the default task (sine, spiking LSTM, no download); prints where the MLflow run and checkpoint are
	$(BIN)/snnlstm train experiment=paper/fig4/slstm paths.run_dir=$(RUN_DIR)

test: install ## run the test suite (TEST_WORKERS=auto processes, one per CPU)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# the documents whose generated blocks `make report` rewrites
REPORT_DOCS := README.md,experiments/smnist.md,experiments/sine.md,experiments/language.md,experiments/fsdd.md,experiments/long_sequences.md

report: install ## rebuild reports/ and the results tables of the README and experiments/*.md from the runs in RUN_DIR
	$(BIN)/snnlstm report paths.run_dir=$(RUN_DIR) 'docs=[$(REPORT_DOCS)]'

gpu-check: install ## on a CUDA machine: GPU tests of the triton and torch engines, then snnlstm bench device=cuda
	PYTHON=$(BIN)/python .ci/gpu-check

# Pure-Python packages (and soundfile's cffi for Python 3.12) for .ci/gpu-check on a machine
# whose python3 has torch and triton but no PyPI; antlr4's runtime exists only as source.
gpu-wheels: install ## download into .whl/ what .ci/gpu-check needs where there is no PyPI (Python 3.12, x86-64)
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
		hydra-core==1.3.8 omegaconf==2.3.1 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 $(QUIET_PIP)
	$(BIN)/python -m pip download -q --no-deps --no-binary=:all: -d .whl antlr4-python3-runtime==4.9.3 $(QUIET_PIP)

ui: install ## serve the MLflow dashboard of the runs folder (RUN_DIR=runs) on 127.0.0.1 (PORT=5000)
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(PORT) --workers 1 \
		--backend-store-uri sqlite:///$(abspath $(RUN_DIR))/mlflow.db \
		--default-artifact-root $(abspath $(RUN_DIR))/mlartifacts

clean: ## remove caches and build files (keeps runs/ and the venv)
	rm -rf .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
