# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test`.
# Each installs exactly requirements.lock into .venv on first use (and again when the lock or
# pyproject.toml changes). `make lock` regenerates the lock from pyproject.toml after a dependency
# change there (and in environment.yml, which mirrors it; tests/test_hygiene.py checks all three agree).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LOCK := requirements.lock
# pip-compile (pip-tools) resolves the lock in its own small venv, so the project's venv never needs it
LOCK_VENV := .venv-lock
PIP_TOOLS := pip-tools==7.6.2
PIP := --disable-pip-version-check -q
# pip on these machines warns about every missing local index folder; keep the log readable
PIPQUIET := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: help venv lock demo test test-fast hooks format lab bench bench-full portability corpus nbstripout clean-outputs

help:
	@echo "make demo   - run notebooks 01.. headless on the built-in demo corpus into outputs/demo/"
	@echo "make test   - every test tier: unit, slow, notebooks (nbval) and hygiene checks; CI runs it"
	@echo "make test-fast - the fast tier (plain pytest, under 2 minutes)"
	@echo "make hooks  - install the pre-commit hooks (ruff check, ruff format, nbstripout) in this clone"
	@echo "make format - apply ruff's fixes and formatting"
	@echo "make lab    - open JupyterLab on the project"
	@echo "make bench  - every benchmark script in benchmarks/ in its quick mode, one after another (~10 min)"
	@echo "make bench-full - every benchmark's full run (hours; the training sweep alone ~13 h on a CPU)"
	@echo "make portability - the learning checks under other CPU kernels, thread counts and seeds, with margins"
	@echo "make corpus - build the real training corpus from Debian packages into outputs/corpus (ARGS=... for build_corpus)"
	@echo "make lock   - regenerate $(LOCK) (every package, exact versions) from pyproject.toml"

# Exactly the lock, nothing resolved here: torch is the CPU build (2.13.0+cpu, a local wheel on these
# machines or PyTorch's CPU index elsewhere); an unpinned torch would pull multi-GB CUDA builds. (uv was
# measured in pip's place, 11 s against 82 s, and not adopted: it installed another wheel of one pinned
# package than pip does here, see README "Set-up".)
$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP) --no-deps -r $(LOCK) 2>&1 | $(PIPQUIET)
	$(PY) -m pip install $(PIP) --no-deps --no-build-isolation -e . 2>&1 | $(PIPQUIET)
	$(PY) -m pip check
	$(PY) -c "import torch, fplib; assert torch.__version__ == '2.13.0+cpu', torch.__version__"
	touch $(STAMP)

venv: $(STAMP)

# nbstripout's git filter: what git stores of a notebook is stripped of outputs, execution counts and the
# metadata JupyterLab adds when it saves (cell ids kept, so they stay stable), so running a notebook in
# Lab leaves `git status` clean. Installed into this clone's .git/config by every target that uses the venv.
# (the same keys as fplib.notebooks.LAB_METADATA; `make lab` also strips the numbered notebooks as it saves them)
NB_KEYS := $(foreach k,codemirror_mode file_extension mimetype nbconvert_exporter pygments_lexer version,metadata.language_info.$(k))
NB_FILTER := '$(abspath $(PY))' -m nbstripout --keep-id --extra-keys '$(NB_KEYS)'
nbstripout: $(STAMP)
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1 && \
	    [ "$$(git config --get filter.nbstripout.clean)" != "$(NB_FILTER)" ]; then \
	  $(PY) -m nbstripout --install && \
	  git config filter.nbstripout.clean "$(NB_FILTER)" && \
	  git config diff.ipynb.textconv "$(NB_FILTER) -t" && \
	  echo "installed nbstripout's git filter (notebooks are committed without outputs)"; fi

# Resolves pyproject.toml's dependencies with the dev and bench extras (every package, transitive
# ones included, exact versions), with pip's own configuration (indexes, find-links, constraints).
# Pins already in the lock are kept where they still fit, so adding a dependency adds only it and
# what it needs; `make lock LOCK_ARGS=--upgrade` moves everything to the newest versions allowed.
LOCK_ARGS ?=
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && \
		$(LOCK_VENV)/bin/pip install $(PIP) $(PIP_TOOLS) 2>&1 | $(PIPQUIET); }
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --extra dev --extra bench \
		--strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links --newline LF \
		$(LOCK_ARGS) --output-file $(LOCK) pyproject.toml 2>&1 | $(PIPQUIET)
	! grep -i '^nvidia-' $(LOCK)
	grep -qx 'torch==2.13.0+cpu' $(LOCK)

demo: nbstripout
	$(VENV)/bin/fplib notebooks --profile demo

# every tier: unit, slow and notebooks (CI runs this); `make test-fast` is the fast tier alone (plain pytest)
test: nbstripout
	$(PY) -m pytest -m ""

test-fast: nbstripout
	$(PY) -m pytest

# the pre-commit hooks (ruff check, ruff format, nbstripout) before every commit of this clone
hooks: nbstripout
	$(VENV)/bin/pre-commit install

# what the hooks would change, changed: lint fixes, formatting, notebooks stripped
format: $(STAMP)
	$(VENV)/bin/ruff check --fix --force-exclude .
	$(VENV)/bin/ruff format --force-exclude .

# the real training corpus (fplib.corpus): about 4.5 GB of .deb files fetched, 19 h of audio made (~1 h)
corpus: $(STAMP)
	$(VENV)/bin/build_corpus $(ARGS)

lab: nbstripout
	$(VENV)/bin/jupyter lab --allow-root --no-browser --notebook-dir=. \
		--ContentsManager.pre_save_hook=fplib.notebooks.strip_on_save

# Every benchmark script's quick mode, one after another: the same code path end to end on small inputs,
# each script printing its figures beside its reference, measured in the same run (benchmarks/README.md has
# the table). Nothing to fetch first: where a script needs the real corpus or the real-music data, its
# quick mode makes a small synthetic stand-in (benchmarks/standin.py). About 10 minutes on 2 cores; the
# figures are not comparable with the full runs'. (ship_model.py is a tool, not a benchmark: not here.)
bench: $(STAMP)
	$(PY) benchmarks/bench_augment.py --quick
	$(PY) benchmarks/bench_train.py --quick
	$(PY) benchmarks/bench_extract.py --quick
	$(PY) benchmarks/bench_query.py --quick
	$(PY) benchmarks/bench_search.py --quick
	$(PY) benchmarks/bench_scale.py --quick
	$(PY) benchmarks/bench_listen.py --quick
	$(PY) benchmarks/fault_injection.py --quick
	$(PY) benchmarks/portability.py --quick
	$(PY) benchmarks/real_music/run.py --quick
	$(PY) benchmarks/real_music/redecide.py --quick
	$(PY) benchmarks/real_music/sweep.py --quick
	$(PY) benchmarks/long_recordings.py --quick
	$(PY) benchmarks/ablation.py --quick

# Every benchmark's full run, one after another, as benchmarks/README.md gives them (durations on a 2-core
# CPU there): the scripts up to portability, then the real-music data fetched (apt-get download of four
# Debian packages), run.py (about 45 minutes), the ablation (about 1.5 hours; it needs `make corpus` first,
# about an hour more), then the training sweep: 13 trainings of 26 minutes to 3.5 hours, about 13 hours in
# all (minutes each on a GPU: `benchmarks/real_music/sweep.py --device cuda`).
bench-full: $(STAMP)
	$(PY) benchmarks/bench_augment.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_extract.py
	$(PY) benchmarks/bench_query.py
	$(PY) benchmarks/bench_search.py
	$(PY) benchmarks/bench_scale.py
	$(PY) benchmarks/bench_listen.py --model fplib/pretrained/fplib-small-v1.pt --streams 8 --songs-out 16
	$(PY) benchmarks/fault_injection.py
	$(PY) benchmarks/portability.py
	$(PY) benchmarks/real_music/setup_data.py
	$(PY) benchmarks/real_music/run.py --checkpoint fplib/pretrained/fplib-small-v2.pt --name full
	$(PY) benchmarks/real_music/redecide.py benchmarks/real_music/results/full neural fplib/pretrained/fplib-small-v2.json
	$(PY) benchmarks/long_recordings.py
	$(PY) benchmarks/ablation.py
	$(PY) benchmarks/real_music/sweep.py

portability: $(STAMP)
	$(PY) benchmarks/portability.py $(ARGS)

clean-outputs:
	rm -rf outputs/demo
