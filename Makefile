# Two commands do all set-up on a fresh machine (Python >= 3.11 with venv):
#   make demo   -- create .venv, install ntkscale, run the main job on a local Dask cluster
#                  (Fashion-MNIST n=8192 when Debian's dataset-fashion-mnist is installed,
#                  else scikit-learn digits); report, metrics and figures in runs/<job>/
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

DEMO_JOB ?= $(if $(wildcard /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte*),jobs/fashion-mnist.toml,jobs/digits.toml)

demo: $(VENV)/.installed
	$(VENV)/bin/ntkscale run $(DEMO_JOB)

test: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" -p no:cacheprovider

test-all: $(VENV)/.installed
	$(PY) -m pytest -p no:cacheprovider

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_kernel.py
	$(PY) benchmarks/bench_gram.py

.PHONY: install demo test test-all bench
