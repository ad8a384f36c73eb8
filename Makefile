# `make demo`: set up .venv (once) and train the default recipe on MNIST-5k.
# `make test`: set up .venv with the dev extras (once) and run the test suite.
# Re-runs skip the install unless pyproject.toml changed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORE := $(VENV)/.installed-core
DEV := $(VENV)/.installed-dev

.PHONY: demo test bench lint clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(CORE): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $@

$(DEV): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[dev]'
	touch $(CORE) $@

demo: $(CORE)
	$(PY) -m lightship train --recipe default --data mnist5k --name demo --overwrite --no-progress

test: $(DEV)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || echo "no chromium: the browser check in tests/test_report.py will skip"
	$(PY) -m pytest

bench: $(DEV)
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/precision.py
	$(PY) benchmarks/recipes.py
	$(PY) benchmarks/distill_overhead.py
	$(PY) benchmarks/verdicts.py
	$(PY) benchmarks/convergence_truth.py --analyse

lint: $(DEV)
	$(VENV)/bin/ruff check lightship tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
