# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv and install.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# `make test` runs the suite on this many pytest-xdist workers (CI has 2 cores; most long
# tests wait on subprocesses and the broker), one test file per worker so module fixtures
# build once; PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
XDIST   := -n $(PYTEST_WORKERS) --dist loadfile

.PHONY: demo test test-fast lint typecheck docs check bench clean

$(STAMP): pyproject.toml stream/_textscan.c detectors/_kernels.c  # editable: C rebuilt here
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# A CPU build of torch first: an unpinned torch resolves to a multi-GB CUDA build here.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[train,report,dev,librdkafka,docs,multimodal,bench,embeddings]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/distill serve --demo

test: $(STAMP)
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP)  # no broker, nothing long: the subset to run while editing
	$(PY) -m pytest $(XDIST) -m "not slow and not broker" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)  # strict on stream, detectors and distill ([tool.mypy] in pyproject.toml)
	$(VENV)/bin/mypy

docs: $(STAMP)  # the documentation site, with link checking; open site/index.html
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

check: lint typecheck docs  # what CI runs besides the tests

bench: $(STAMP)  # each prints its figures and a ratio against an in-process baseline
	$(PY) benchmarks/bench_signals.py
	$(PY) benchmarks/bench_detect.py
	$(PY) benchmarks/bench_serve.py
	$(PY) benchmarks/bench_apo.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build site *.egg-info
