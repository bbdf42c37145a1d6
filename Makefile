# Two commands do all the set-up on a fresh machine with Python 3.11 and make:
#   make demo   - the zero-shot-eval flow on the synthetic benchmark with the shipped tiny models
#   make test   - the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast server bench data clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/plantcad-flows demo --results-json outputs/demo/results-demo.json $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(ARGS)

server: $(STAMP)
	$(VENV)/bin/plantcad-flows server

bench: $(STAMP)
	$(PY) benchmarks/scoring_throughput.py $(ARGS)

data: $(STAMP)
	$(VENV)/bin/plantcad-flows generate-data

clean:
	rm -rf outputs data/synthetic
