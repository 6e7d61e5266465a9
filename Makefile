# The README's commands. Each one sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint typecheck unit docs clean bench bench-core bench-postgres bench-taskiq chaos chaos-small

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "SquidMesh needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

## demo: run the example payment-recovery workflow end to end and check it
demo: $(STAMP)
	$(BIN)/squidmesh smoke

## test: lint, types, import contract, tests, property tests, doctests, coverage
test: lint typecheck unit

## test-fast: the inner loop, under a minute: unit, property, contract and runtime tests not marked slow or postgres (no coverage, no lint)
test-fast: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow and not postgres"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report --include='squidmesh_core/*' --fail-under=95
	$(BIN)/coverage report
	$(BIN)/pytest --doctest-modules squidmesh_core -q

## docs: regenerate the status tables in docs/architecture.md from the code
docs: $(STAMP)
	$(BIN)/python -m squidmesh_backends.cli.main docs-tables --write docs/architecture.md

clean:
	rm -rf $(VENV) $(PEER) .mypy_cache .ruff_cache .pytest_cache .hypothesis .coverage build *.egg-info

## chaos: the full fault suite (own PostgreSQL and Redis); rewrites the results in docs/reliability.md
chaos: $(STAMP)
	$(BIN)/python -m chaos --write docs/reliability.md

## chaos-small: the CI-sized fault suite (tests/test_chaos.py runs it too)
chaos-small: $(STAMP)
	$(BIN)/python -m chaos --size small

## bench-core: measure pure decide throughput and record it in docs/performance.md
bench-core: $(STAMP)
	$(BIN)/python bench/core_decide.py --runs 2000 --rounds 5 --write docs/performance.md

## bench-postgres: the runtime on PostgreSQL; rewrites its section of docs/performance.md
bench-postgres: $(STAMP)
	$(BIN)/python bench/postgres_store.py --runs 500 --concurrency 16 --write docs/performance.md

## bench-taskiq: steps through Taskiq on Redis (inline on/off) next to a raw Taskiq round trip
bench-taskiq: $(STAMP)
	$(BIN)/python bench/taskiq_steps.py --serial 100 --burst 200 --raw-burst 2000 --write docs/performance.md

# The peer engine (DBOS Transact) and the plotting library live in their own
# environment, so nothing of theirs reaches SquidMesh's.
PEER       ?= .venv-bench
PEER_STAMP  = $(PEER)/.installed-stamp

$(PEER_STAMP):
	$(PYTHON) -m venv $(PEER)
	$(PEER)/bin/pip install --quiet --upgrade pip
	$(PEER)/bin/pip install --quiet dbos==3.4.0 matplotlib
	@touch $(PEER_STAMP)

## bench: SquidMesh next to DBOS on the same PostgreSQL; rewrites docs/performance.md, the README line and the plot
bench: $(STAMP) $(PEER_STAMP)
	$(BIN)/python bench/compare.py --dbos-python $(PEER)/bin/python --json docs/performance.json \
		--write docs/performance.md --readme README.md --plot docs/performance.png
