# Two entry points (see README): `make demo` and `make test`. Each creates .venv
# when it is missing. On a machine without an NVIDIA GPU the CPU build of torch
# is installed first so that the unpinned torch requirement does not pull
# several GB of CUDA wheels; with a GPU, pip resolves torch normally.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_CPU_VERSION ?= 2.13.0
# Test processes, each with its own local Ray: the end-to-end sweeps mostly wait on process
# starts, so two overlap well even on a 2-core machine. A module runs in one process, so
# a module's shared sweep is never run twice.
TEST_WORKERS ?= 2
# Each test has its own timeout (pyproject.toml); this caps the whole run, so that a lost
# xdist worker can never keep CI waiting.
TEST_RUN_SECONDS ?= 3600

.PHONY: demo demo-quick test lint format docs clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install --quiet "torch==$(TORCH_CPU_VERSION)" \
	  || $(BIN)/python -m pip install --quiet "torch==$(TORCH_CPU_VERSION)" --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/annealscale demo --out runs/demo

demo-quick: $(STAMP)
	$(BIN)/annealscale demo --quick --out runs/demo-quick

test: $(STAMP)
	timeout --kill-after=30 $(TEST_RUN_SECONDS) \
	  $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --durations=15 \
	  || { rc=$$?; [ $$rc -eq 124 ] && echo "make test: stopped after $(TEST_RUN_SECONDS) s"; exit $$rc; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

docs: $(STAMP)
	$(BIN)/annealscale schema --markdown > docs/spec-reference.md

clean:
	rm -rf $(VENV) runs .pytest_cache
