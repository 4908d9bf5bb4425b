# streamkit: `make demo` and `make test` do all their own set-up (virtualenv, installs, Kafka
# jars, broker start and stop). KAFKA_BOOTSTRAP_SERVERS set → that broker is used, none started.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
KAFKA := $(PY) scripts/localkafka.py
# a local PostgreSQL around the command (streamkit/localpg.py), unless STREAMKIT_POSTGRES_DSN is set
PG := $(PY) -m streamkit.localpg run --

.PHONY: demo test lint unit chaos soak kafka-up kafka-down kafka-status bench clean chromium postgres

# (setup.py and its C sources: built in place by the editable install)
$(STAMP): pyproject.toml setup.py streamkit/aiokafka_internals/_records.c streamkit/aiokafka_internals/_batches.c streamkit/runtime/_keyby.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP) postgres
	$(KAFKA) run -- $(PG) $(PY) -m apps.ecommerce $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint chromium postgres
	$(KAFKA) run -- $(PG) $(PY) -m pytest -q -ra $(PYTEST_ARGS)

# The dashboard's browser test drives Debian's headless Chromium: installed here when missing
# (as root, with apt); without apt or root the test is skipped and says why.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (Debian package) for the dashboard's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium missing and apt-get (as root) unavailable: the browser test will skip"; fi

# PostgreSQL's server (initdb, postgres) for the sink tests and the demo: Debian's package is
# installed when it is missing (as root, with apt); unneeded with STREAMKIT_POSTGRES_DSN set.
postgres:
	@if [ -n "$$STREAMKIT_POSTGRES_DSN" ] || command -v initdb >/dev/null 2>&1 \
		|| ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing postgresql (Debian package) for the sink tests and the demo"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "PostgreSQL missing: install it, or set STREAMKIT_POSTGRES_DSN to a server of yours"; exit 1; fi

# The chaos suite in its long form (docs/reliability.md): CHAOS_KILLS kill -9s of random workers
# while CHAOS_EVENTS purchases flow, the zombie, then tests/test_chaos.py with CHAOS_LONG=1 (broker
# restarts, rebalance storm, full and read-only state disk, corrupted store, the e-commerce demo
# under kill -9), every variant of the protocol-window tests (tests/test_stop_windows.py,
# tests/test_assign_windows.py), of the kill -9 tests of cooperative rebalances, windows and joins
# and of the rebalance that keeps partitions running, a table of 1,000,000 keys past its cache.
# `make test` runs the short forms (`chaos_only` in tests/kafkahelp.py: the suite's 20 minutes).
# CHAOS_SEED replays a run. The figures are printed and appended as JSON lines to CHAOS_FIGURES.
CHAOS_KILLS ?= 100
CHAOS_EVENTS ?= 50000
CHAOS_FIGURES ?= chaos-figures.jsonl
chaos: $(STAMP)
	CHAOS_KILLS=$(CHAOS_KILLS) CHAOS_EVENTS=$(CHAOS_EVENTS) CHAOS_LONG=1 \
	CHAOS_FIGURES=$(abspath $(CHAOS_FIGURES)) $(KAFKA) run -- \
		$(PY) -m pytest -q -ra -s --timeout 1800 tests/test_exactly_once.py tests/test_chaos.py \
		tests/test_cluster.py tests/test_static_membership.py tests/test_stop_windows.py \
		tests/test_assign_windows.py tests/test_cooperative.py tests/test_event_time.py \
		tests/test_joins_broker.py tests/test_big_table.py \
		-k 'kill_9 or zombie or chaos or static or windows or stay_running or than_its_cache'

# The soak run: MINUTES at the highest sustained rate; memory, lag, rebalances, checkpoints, output
MINUTES ?= 10
soak: $(STAMP)
	$(KAFKA) run -- $(PY) -m bench.soak --minutes $(MINUTES) --out bench/results-soak.md $(SOAK_ARGS)

kafka-up: $(STAMP)
	@$(KAFKA) up

kafka-down: $(STAMP)
	@$(KAFKA) down

kafka-status: $(STAMP)
	@$(KAFKA) status

# The side-by-side benchmark (docs/benchmarks.md) at its defaults (bench/compare.py: N, 3 reps,
# pipelines A and B, every system), with the latency runs at 10,000 events/s, the JSON and the
# plot; e.g. BENCH_ARGS="--pipelines A --systems streamkit,'kafka streams'" for a part of it
BENCH_ARGS ?= --paced-events 100000 --json bench/results-compare.json --plot docs/bench-compare.png
bench: $(STAMP)
	$(KAFKA) run -- $(PY) -m bench.compare $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
