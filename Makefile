# make run: set up .venv if needed and run the daemon on ./bgjobs.toml and ./spool.
# make test: the same set-up, then the whole suite, ruff and mypy.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/spoold start --config bgjobs.toml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# make bench [BENCH_SCALE=small]: spoold against Huey and RQ in one run (bench/README.md); needs apt-get
# for redis-server the first time. Results: bench/results/.
BENCH_SCALE ?= full
.PHONY: bench
bench:
	BENCH_SCALE=$(BENCH_SCALE) PYTHON=$(PYTHON) bench/run.sh
