# `make demo` and `make test` do all the set-up: they create .venv if missing and install jmeta into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: demo test docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/jmeta train experiments/sinusoid_maml.py --workdir runs/sinusoid_maml

test: $(STAMP)
	$(BIN)/ruff check jmeta tests experiments benchmarks
	$(BIN)/python -m pytest -q -n auto

$(DOCS_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

# The documentation site, with warnings as errors (NO_MKDOCS_2_WARNING hides Material's banner only).
docs: $(STAMP) $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/jmeta bench sinusoid-maml

clean:
	rm -rf $(VENV) runs
