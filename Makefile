# Two commands on a fresh machine: `make run` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench drill clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# `relay up`'s run directory (logs, demo key, the run file naming its configuration) in the data
# directory, ~/.local/share/sms-ha-relay/run, beside the store: every `relay` command, in any folder,
# finds the running deployment there.
RUN_DIR = $(shell $(BIN)/python -c 'from ops.context import local_run_dir; print(local_run_dir())')

## Start the relay locally: migrations, ingress, one worker per site, two simulated platforms.
run: $(STAMP)
	@echo "relay: in another terminal, '. $(VENV)/bin/activate' puts 'relay' on the PATH (try 'relay status')"
	$(BIN)/relay up --run-dir "$(RUN_DIR)"

## A short failover drill against the relay `make run` started: site a's platform is down for the middle
## third of the drill's traffic; exit 0 only if no message was lost. Other drills: make drill DRILL_ARGS=...
DRILL_ARGS ?= --site a --fault down
drill: $(STAMP)
	$(BIN)/relay drill --run-dir "$(RUN_DIR)" $(DRILL_ARGS)

## Lint, type-check, import contracts, then the whole test suite (real RabbitMQ, SQLite, Kannel).
## Extra pytest arguments: make test PYTEST_ARGS="-k 'not broker_restart'"
test: $(STAMP) lint
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared ingress workers ops simulator migrations
	$(BIN)/lint-imports

## The whole benchmark suite; writes bench/results/report.json and PNG plots. Its kannel section drives
## load with wrk (apt-get install -y wrk) against Debian's Kannel (apt-get install -y kannel kannel-extras).
bench: $(STAMP)
	@command -v wrk >/dev/null || echo "bench: wrk is not installed (apt-get install -y wrk): the kannel section will fail"
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info .run
