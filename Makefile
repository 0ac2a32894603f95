# The README's two commands: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

install: $(STAMP)

# torch first and pinned, so that pip never replaces it with another build
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: install
	$(VENV)/bin/optibench db upgrade
	$(VENV)/bin/optibench serve

# lint, format and types first: a minute, before the suite's quarter of an hour
test: install lint
	$(PY) -m pytest -m "not alone"
	$(PY) -m pytest -m alone -n 0

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .optibench .pytest_cache .mypy_cache .ruff_cache
