# Two commands do all the set-up on a fresh machine with Python 3.11 and make:
#   make demo   - the zero-shot-eval flow on the synthetic benchmark with the shipped tiny models
#   make test   - the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo sweep-demo vep-demo test test-fast lint format screenshot grid-screenshot server bench data clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/plantcad-flows demo --results-json outputs/demo/results-demo.json $(ARGS)

# A checkpoint sweep (the tiny MLM at four steps, written in seconds) through `checkpoints:`
# discovery; prints where the trend plot is. Re-run with ARGS=--steps=1000,2000,3000,4000,5000:
# only the new checkpoint is scored.
sweep-demo: $(STAMP)
	$(VENV)/bin/plantcad-flows sweep-demo $(ARGS)

# Variant effects: a synthetic genome and VCF (written in seconds) scored with the tiny MLM;
# prints the metrics and where the scores are. ARGS="--models mlm clm" adds the causal LM.
vep-demo: $(STAMP)
	$(VENV)/bin/plantcad-flows vep-demo $(ARGS)

# Lint first (import boundaries, ruff): a broken boundary fails before the slow suite starts.
lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The in-process tier: no Prefect server, Ray, S3, browser, Redis or PostgreSQL (tests/conftest.py
# marks each test by the parts it needs); for every edit.
FAST := not (slow or prefect or ray or s3 or browser or faults or postgres or redis)
# Workers for the whole suite: one per core (at least 2); tests sharing a server or a Ray cluster
# stay on one worker (xdist_group).
WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -lt 2 ] && n=2; echo $$n)

# The whole suite, in parallel. First the system parts it needs (Chromium, Redis, PostgreSQL):
# installed with apt when this user can, else the exact tests that will skip are listed.
test: lint
	PY=$(PY) bash scripts/system_parts.sh
	$(PY) -m pytest -q -p no:cacheprovider -n $(WORKERS) --dist loadgroup $(ARGS)

test-fast: lint
	$(PY) -m pytest -q -p no:cacheprovider -n 2 -m "$(FAST)" $(ARGS)

# The README's UI screenshot, from a real run in headless Chromium (tests never write the repo).
screenshot: $(STAMP)
	PLANTCAD_SCREENSHOT_DIR=docs/img $(PY) -m pytest -q -p no:cacheprovider tests/test_ui_browser.py

# The README's grid screenshot: configs/grid-example.yaml on a throwaway server and worker.
grid-screenshot: $(STAMP)
	$(PY) scripts/grid_screenshot.py --out docs/img/grid-run.png

server: $(STAMP)
	$(VENV)/bin/plantcad-flows server

bench: $(STAMP)
	$(PY) benchmarks/scoring_throughput.py $(ARGS)

data: $(STAMP)
	$(VENV)/bin/plantcad-flows generate-data

clean:
	rm -rf outputs data/synthetic
