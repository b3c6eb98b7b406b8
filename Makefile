# The two commands of the Quickstart, and the checks CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The Rucio server the DDM tests start (tests/rucio_server.py): a virtual environment of
# its own, since the server pins SQLAlchemy, Flask and urllib3 versions of its own.
RUCIO_VERSION ?= 41.5.1
RUCIO_VENV ?= .venv-rucio
RUCIO_STAMP := $(RUCIO_VENV)/.installed

.PHONY: demo test lint format clean

$(STAMP): pyproject.toml setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,rucio]'
	touch $(STAMP)

$(RUCIO_STAMP): Makefile
	$(PYTHON) -m venv $(RUCIO_VENV)
	$(RUCIO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RUCIO_VENV)/bin/python -m pip install --quiet 'rucio[postgresql]==$(RUCIO_VERSION)' 'gunicorn>=23'
	touch $(RUCIO_STAMP)

demo: $(STAMP)
	$(BIN)/pandamq demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint $(RUCIO_STAMP)
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(RUCIO_VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
