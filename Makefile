# The two commands of the README:
#   make repro   set up .venv and run the whole pipeline (dvc repro) on the default dataset
#   make test    set up .venv and run the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# dvc runs each stage's `python ...` command through the shell: use the venv's interpreter
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test lint bench clean-scratch

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

clean-scratch:
	rm -rf .qsenn_scratch
