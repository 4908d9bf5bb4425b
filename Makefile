# streamkit: `make demo` and `make test` do all their own set-up (virtualenv, installs, Kafka
# jars, broker start and stop). KAFKA_BOOTSTRAP_SERVERS set → that broker is used, none started.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
KAFKA := $(PY) scripts/localkafka.py

.PHONY: demo test lint unit chaos kafka-up kafka-down kafka-status bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(KAFKA) run -- $(PY) -m apps.ecommerce $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(KAFKA) run -- $(PY) -m pytest -q -ra $(PYTEST_ARGS)

# The long crash test: CHAOS_KILLS kill -9s of random workers while CHAOS_EVENTS purchases flow
# (CI runs the same test with 20 kills and 6000 purchases). CHAOS_SEED replays a run.
CHAOS_KILLS ?= 100
CHAOS_EVENTS ?= 50000
chaos: $(STAMP)
	CHAOS_KILLS=$(CHAOS_KILLS) CHAOS_EVENTS=$(CHAOS_EVENTS) $(KAFKA) run -- \
		$(PY) -m pytest -q -ra -s tests/test_exactly_once.py -k kill_9

kafka-up: $(STAMP)
	@$(KAFKA) up

kafka-down: $(STAMP)
	@$(KAFKA) down

kafka-status: $(STAMP)
	@$(KAFKA) status

bench: $(STAMP)
	$(KAFKA) run -- $(PY) -m bench.compare $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
