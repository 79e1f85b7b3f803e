# Two entry points (see README): `make run` sets up, pulls the default model and serves it
# (OpenAI-compatible API + web UI on http://127.0.0.1:8000),
# `make test` sets up the test tools and runs the whole suite. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL ?= smollm2:135m-instruct

.PHONY: run chat test lint setup setup-dev

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	# torch first, pinned: a bare "torch" requirement would pull a multi-GB CUDA build
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(VENV)/.base
setup-dev: $(VENV)/.dev

run: $(VENV)/.base
	$(VENV)/bin/llmos serve $(MODEL) --pull

chat: $(VENV)/.base
	$(VENV)/bin/llmos pull $(MODEL)
	$(VENV)/bin/llmos chat $(MODEL)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests benchmarks

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: lint
	$(PY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc
