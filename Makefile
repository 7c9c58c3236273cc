# `make demo` and `make test` do all the set-up: they create .venv if missing and install jmeta into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/jmeta train experiments/sinusoid_maml.py --workdir runs/sinusoid_maml

test: $(STAMP)
	$(BIN)/ruff check jmeta tests experiments
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/jmeta bench sinusoid-maml

clean:
	rm -rf $(VENV) runs
