# One-command setup for a fresh machine. `make demo` runs the main job on its embedded default,
# `make test` runs the test suite; both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
# CPU machines: the pinned CPU wheel (this is what keeps pip from pulling CUDA packages). Where no local
# wheel is configured, pass e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
# GPU machines: install the CUDA build of the same version into $(VENV) first.
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/python jobs/mtts.py

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25

bench: setup
	$(BIN)/python benchmarks/data_throughput.py
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) mlflow.db mlruns runs data/synthetic
