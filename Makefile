# The README's contract: `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_STORE ?= model_store
HOST ?= 127.0.0.1
PORT ?= 8000
GRPC_PORT ?= 8001
BACKEND ?= onnxruntime
# Extras installed into .venv (see pyproject.toml). `gpu` replaces `cpu`, never both.
EXTRAS ?= cpu,train,torchserve,dev
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: setup system-deps train run test lint clean archives loadtest bench image

$(STAMP): pyproject.toml constraints.txt deploy/install.sh
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; set PYTHON=python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH bash deploy/install.sh "$(EXTRAS)" --editable
	touch $@

setup: $(STAMP)

train: setup
	$(PY) -m training all --missing --model-store $(MODEL_STORE)

# BACKEND=torchserve: TorchServe serves the archives, the gateway runs in front (deploy/torchserve/stack.py).
# BACKEND=torchserve-native: the gateway serves the archives itself, running their handlers.
run: train
ifeq ($(BACKEND),torchserve)
	$(MAKE) archives
	$(PY) -m deploy.torchserve.stack --model-store $(MODEL_STORE) --host $(HOST) --port $(PORT) --grpc-port $(GRPC_PORT)
else ifeq ($(BACKEND),torchserve-native)
	$(MAKE) archives
	$(PY) -m service --backend torchserve-native --model-store $(MODEL_STORE) --host $(HOST) --port $(PORT) --grpc-port $(GRPC_PORT)
else
	$(PY) -m service --model-store $(MODEL_STORE) --host $(HOST) --port $(PORT) --grpc-port $(GRPC_PORT)
endif

archives: setup
	$(PY) -m deploy.torchserve.archive --model-store $(MODEL_STORE)

system-deps:
	bash deploy/install-system.sh

test: setup system-deps
	$(PY) -m pytest

# The CPU gateway image (Dockerfile target `gateway`, RUNTIME=cpu) as gateway:cpu, with podman,
# from a local Debian base made once by mmdebstrap; reused while its inputs are unchanged
# (deploy/image.py; docs/deploy.md). IMAGE_ARGS=--force rebuilds.
image: system-deps
	$(PYTHON) deploy/image.py build $(IMAGE_ARGS)

# Load test a running gateway (`make run` elsewhere): bounded, headless; CSV + HTML under
# loadtests/results/, then the gateway's queue/compute/batch split beside Locust's percentiles.
# Either protocol: LOADTEST_TAGS=grpc (ModelInfer on LOADTEST_GRPC_HOST) or any REST tags, or both.
LOADTEST_HOST ?= http://$(HOST):$(PORT)
LOADTEST_GRPC_HOST ?= $(HOST):$(GRPC_PORT)
LOADTEST_TAGS ?= v2json,v2binary,upload,text
LOADTEST_STEPS ?= 1,4,16,32
LOADTEST_STEP_SECONDS ?= 10

loadtest: setup
	$(PY) -m loadtests.locust_run --host $(LOADTEST_HOST) --grpc-host $(LOADTEST_GRPC_HOST) \
		--tags $(LOADTEST_TAGS) --steps $(LOADTEST_STEPS) --step-seconds $(LOADTEST_STEP_SECONDS)

# The side-by-side benchmark; rewrites docs/benchmarks.md, docs/benchmarks.json and the plots.
bench: setup system-deps
	$(PY) -m loadtests.bench $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis logs loadtests/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find $(MODEL_STORE) -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
