# Two commands do all set-up on a fresh machine (Python >= 3.11 with venv):
#   make demo   -- create .venv, install ntkscale, run the main job on a local Dask cluster
#   make test   -- create .venv, install ntkscale with test extras, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/ntkscale demo --out runs/demo

test: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" -p no:cacheprovider

test-all: $(VENV)/.installed
	$(PY) -m pytest -p no:cacheprovider

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_kernel.py
	$(PY) benchmarks/bench_gram.py

.PHONY: install demo test test-all bench
