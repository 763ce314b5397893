# slimtrain: `make demo` and `make test` work on a fresh machine from one command each.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.slimtrain-installed
# The CPU build of torch is pinned here, and installed first, so pip never resolves a CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: install demo test lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install $(TORCH_PIN)
	$(PY) -m pip install -e '.[dev,onnx,tensorboard]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/slimtrain demo

test: $(STAMP)
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

bench: $(STAMP)
	$(PY) -m benchmarks --quick

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache .ruff_cache
