# glcnet: set-up and everyday commands. Every target installs what it needs first.
PYTHON_SYS ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install.stamp
# PyTorch is installed first, pinned to the wheels this machine carries; override for other platforms,
# e.g. `make install TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install test test-all demo bench lint format sample clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e ".[dev,vector]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -m "" $(PYTEST_ARGS)

sample: $(STAMP)
	$(PY) -m glcnet.data.sample

demo: $(STAMP)
	$(PY) scripts/protocol.py experiment=demo

bench: $(STAMP)
	$(PY) scripts/bench.py

lint: $(STAMP)
	$(VENV)/bin/ruff check glcnet scripts tests
	$(VENV)/bin/ruff format --check glcnet scripts tests

format: $(STAMP)
	$(VENV)/bin/ruff check --fix glcnet scripts tests
	$(VENV)/bin/ruff format glcnet scripts tests

clean:
	rm -rf outputs bench_results .pytest_cache .ruff_cache
