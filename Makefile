# Two commands on a fresh machine with only Python: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint bench chaos install browser clean

$(STAMP): pyproject.toml
	rm -f $(VENV)/.installed-*
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start the embedded broker and every service on SQLite; prints their URLs.
run: install
	$(BIN)/incentives run

## Lint, type-check, layer contracts, then the whole suite (real broker, real PostgreSQL,
## and Debian's Chromium for the oversight page).
test: install lint browser
	$(BIN)/pytest

## Debian's Chromium and its driver, for the page test (installed once; nothing downloads at run time).
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
	  { apt-get install -y --no-install-recommends chromium chromium-driver || \
	    { apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver; }; }

lint: install
	$(BIN)/ruff check shared services tests bench chaos examples
	$(BIN)/ruff format --check shared services tests bench chaos examples
	$(BIN)/mypy shared services chaos
	$(BIN)/lint-imports

## Throughput and latency, printed as ratios measured in the same run.
bench: install
	$(BIN)/python -m bench $(ARGS)

## Kill -9 service processes every few seconds and reset the broker while thousands of
## applications run on two replicas of every service; then check nothing was lost,
## paid twice or overspent. About five minutes; ARGS="--duration 60" for less.
## Then schemathesis again, with 20x the examples of make test and a fresh seed.
FUZZ_EXAMPLES ?= 200
chaos: install
	$(BIN)/python -m chaos $(ARGS)
	INCENTIVES_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) INCENTIVES_FUZZ_SEED=$$(date +%s) \
	  $(BIN)/pytest -q tests/integration/test_openapi_fuzz.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
