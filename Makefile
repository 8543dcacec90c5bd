# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test`.
# Each installs what it needs into .venv on first use (and again when pyproject.toml changes).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# pip on these machines warns about every missing local index folder; keep the log readable
PIPQUIET := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: help venv demo test lab bench clean-outputs

help:
	@echo "make demo   - run notebooks 01.. headless on the built-in demo corpus into outputs/demo/"
	@echo "make test   - unit tests, notebook tests (nbval) and hygiene checks"
	@echo "make lab    - open JupyterLab on the project"
	@echo "make bench  - run the benchmarks in benchmarks/"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip 2>&1 | $(PIPQUIET)
	# torch first, pinned: the local CPU wheel (an unpinned torch pulls CUDA builds; FACTS.md 9)
	$(PY) -m pip install --disable-pip-version-check -q torch==2.13.0 2>&1 | $(PIPQUIET)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev,bench]' 2>&1 | $(PIPQUIET)
	$(PY) -c "import torch, fplib; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m fplib.notebooks --profile demo

test: $(STAMP)
	$(PY) -m pytest

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --allow-root --no-browser --notebook-dir=.

bench: $(STAMP)
	$(PY) benchmarks/bench_augment.py
	$(PY) benchmarks/bench_train.py

clean-outputs:
	rm -rf outputs/demo
