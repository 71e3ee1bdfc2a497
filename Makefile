# Two commands do everything on a fresh machine:
#   make reproduce   set up .venv, then run every numbered notebook headless (papermill, pocket scale)
#   make test        set up .venv, then run the test suite (CI runs this)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup reproduce test test-fast lab clean-runs

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Each notebook runs in number order; the executed copy goes to runs/. The first failing cell stops it.
reproduce: setup
	$(PY) -m jigsaw_lib.notebooks

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean-runs:
	rm -rf runs
