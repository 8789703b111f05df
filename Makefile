# make lectures   set up .venv if needed, then run every notebook headlessly (quick profile) into build/
# make test       set up .venv if needed, then lint (ruff) and run the tests (pytest)
# make lab        open the series in JupyterLab
# make bench      measure training and generation speed, teaching path against fast path
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= quick

.PHONY: setup lectures test lab prefetch bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements-dev.txt -e .
	touch $(STAMP)

lectures: $(STAMP)
	$(BIN)/python -m helpers lectures --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

prefetch: $(STAMP)
	$(BIN)/python -m helpers prefetch

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf build .pytest_cache .ruff_cache
