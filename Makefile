# LossGym: `make demo` serves the environment locally, `make test` runs the suite.
# Both create .venv and install everything they need on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned: an unpinned torch would pull several GB of CUDA wheels
# on a CPU machine. GPU hosts may override, e.g. TORCH_SPEC="torch==2.13.0".
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
DATASET ?= shakespeare
DATA_STAMP := data/$(DATASET)/meta.json
PYTEST_ARGS ?=
# Two pytest workers: tests that train (marked slow) queue on one of them, one at
# a time, while the other runs the rest; most of those wait on servers and
# subprocesses, not the CPU. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist loadgroup

.PHONY: install data sandbox demo serve test test-fast lint format clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

$(DATA_STAMP): $(STAMP)
	$(VENV)/bin/lossgym data prepare $(DATASET)

data: $(DATA_STAMP)

# Agent code runs only in a sandbox: bubblewrap, installed here when it can be.
sandbox:
	@scripts/ensure-sandbox.sh

demo: data sandbox
	$(VENV)/bin/lossgym serve --demo

serve: data sandbox
	$(VENV)/bin/lossgym serve

test: data
	@scripts/ensure-sandbox.sh --optional
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: data
	@scripts/ensure-sandbox.sh --optional
	$(PY) -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check lossgym tests bench
	$(VENV)/bin/ruff format --check lossgym tests bench
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format lossgym tests bench
	$(VENV)/bin/ruff check --fix lossgym tests bench

clean:
	rm -rf $(VENV) data runs var .pytest_cache .ruff_cache
