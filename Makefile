# fsctl — `make run` starts the whole service on the embedded default; `make test` runs the suite.
# Both set up everything they need themselves (virtualenv, packages, a redis-server binary).
# `make test-freeswitch` runs what FreeSWITCH decides against a real FreeSWITCH it starts itself
# (needs `freeswitch` and `sipp` on PATH: ../shared/freeswitch/install.sh installs both).
# `make bench` measures speed on both (tests/bench/run.py); tests never time anything.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all venv run test test-freeswitch lint unit integration bench clean faults

all: test

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade pip setuptools wheel
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/fsctl run

lint: $(STAMP)
	$(BIN)/ruff check --line-length 100 --target-version py311 \
	    --extend-select E,W,I,B,UP,BLE --ignore E501 fsctl tests

test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-freeswitch: $(STAMP)
	$(BIN)/python -m pytest --freeswitch $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

integration: $(STAMP)
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

# Both parts of the benchmark: real FreeSWITCH (when freeswitch and sipp are on PATH) and the
# simulator pipeline; a table, var/bench/bench.{json,md,png}. BENCH_ARGS=--publish updates the
# copy the README shows (tests/bench/results/); BENCH_ARGS=--quick is the smoke run.
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python tests/bench/run.py $(BENCH_ARGS)

faults: $(STAMP)
	$(BIN)/python -m pytest tests/faults $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info
