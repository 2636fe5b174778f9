# The README's contract: `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_STORE ?= model_store
HOST ?= 127.0.0.1
PORT ?= 8000
BACKEND ?= onnxruntime
# Extras installed into .venv (see pyproject.toml). `gpu` replaces `cpu`, never both.
EXTRAS ?= cpu,train,torchserve,dev
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
comma := ,

.PHONY: setup system-deps train run test lint clean archives

$(STAMP): pyproject.toml constraints.txt deploy/install.sh
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; set PYTHON=python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH bash deploy/install.sh "$(EXTRAS)" --editable
	touch $@

setup: $(STAMP)

train: setup
	$(PY) -m training all --missing --model-store $(MODEL_STORE)

run: train
	$(PY) -m service --model-store $(MODEL_STORE) --host $(HOST) --port $(PORT)

system-deps:
	bash deploy/install-system.sh

test: setup system-deps
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis logs loadtests/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find $(MODEL_STORE) -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
