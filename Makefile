# make run: set up .venv if needed and run the daemon on ./bgjobs.toml and ./spool.
# make test: the same set-up, then ruff, mypy, the import layers (lint-imports) and the whole suite.
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
	$(BIN)/lint-imports

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m 'not soak' -n 2

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# make bench [BENCH_SCALE=small]: spoold against Huey and RQ in one run (bench/README.md); needs apt-get
# for redis-server the first time. Results: bench/results/.
BENCH_SCALE ?= full
.PHONY: bench
bench:
	BENCH_SCALE=$(BENCH_SCALE) PYTHON=$(PYTHON) bench/run.sh

# make bench-fresh-fs [BENCH_SCALE=small]: the same, with every system's data on a fresh ext4 (with a journal)
# made for the run (bench/fresh-fs.sh; root and a loop device): rates that do not depend on the disk's last minutes.
.PHONY: bench-fresh-fs
bench-fresh-fs:
	BENCH_SCALE=$(BENCH_SCALE) PYTHON=$(PYTHON) bench/fresh-fs.sh bench/run.sh

# make bench-profile [PROFILE_ARGS="3000 worker fast"]: CPU per job by process and thread, and py-spy stacks
# (bench/profile.py); writes bench/results/profile-ISOLATION-DURABILITY.md.
PROFILE_ARGS ?= 3000 process fsync
.PHONY: bench-profile
bench-profile:
	PYTHON=$(PYTHON) bench/run.sh profile $(PROFILE_ARGS)

# make soak [SOAK_ARGS="--scale 0.05 --only many-daemons,crash-loop"]: the long scenarios (soak/run.py):
# 5,000 jobs on 4 daemons, a SIGKILL halfway, a crash loop (per job, workers, fast), a 50,000-file burst, memory, every crash point,
# several hosts on GlusterFS, the schedule under kills, 120 power cuts on a FUSE filesystem that drops what was not fsynced.
# Prints a table (jobs, faults, restarts, lost, duplicated) and writes soak/results/latest.json.
SOAK_ARGS ?=
.PHONY: soak
soak: $(STAMP)
	$(BIN)/python soak/run.py $(SOAK_ARGS)

# make bench-child: what one job child costs (RSS, page faults, modules, launch delay) per start method.
.PHONY: bench-child
bench-child: $(STAMP)
	$(BIN)/python bench/child_cost.py 60

# make bench-dashboard: every dashboard page and API call over 100,000 done/ and 10,000 failed/ jobs, warm and cold.
.PHONY: bench-dashboard
bench-dashboard: $(STAMP)
	$(BIN)/python bench/dashboard_speed.py

# make bench-submit: a batch of 1,000 jobs through run_background_jobs() against 1,000 run_background_job()
# calls, with durability "fsync" and "fast", on fresh spools under $TMPDIR (bench/submit_batch.py).
.PHONY: bench-submit
bench-submit: $(STAMP)
	$(BIN)/python bench/submit_batch.py 1000 7

# make bench-wait: how soon wait_for_job() returns after its job lands in done/ (bench/wait_latency.py).
.PHONY: bench-wait
bench-wait: $(STAMP)
	$(BIN)/python bench/wait_latency.py 200
