# Ballast: the documented entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
STACK := python3 scripts/stack.py
SERVICES := python3 scripts/services.py
export BALLAST_PG_FSYNC ?= on

.PHONY: help setup demo test test-unit lint format contracts stack-up stack-down stack-status \
        up down status migrate bench bench-flow bench-engine bench-optimizer bench-backtest bench-tax bench-scale bench-custodian bench-workflow chaos migration clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: ## install uv and the Python workspace (.venv)
	@scripts/bootstrap.sh

demo: setup stack-up ## start everything, load a demo book, change a model, show the result
	@$(PY) -m ballast_demo

test: setup lint ## the whole suite: format check, lint, types, unit and integration (real Kafka + Postgres)
	@BALLAST_PG_FSYNC=off $(STACK) up
	@$(PY) -m pytest -q -p no:cacheprovider

test-unit: setup ## run the tests that need no Kafka or Postgres
	@$(PY) -m pytest -q -p no:cacheprovider -m "not integration"

lint: setup ## format check (ruff format), lint (ruff) and types (mypy)
	@$(PY) -m ruff format --check .
	@$(PY) -m ruff check .
	@$(PY) -m mypy libs/common/src libs/engine/src services/*/src tools/*/src

format: setup ## format the code
	@$(PY) -m ruff format .
	@$(PY) -m ruff check --fix .

contracts: setup ## regenerate contracts/ (JSON Schemas, examples, AsyncAPI) from the code
	@$(PY) -m ballast_common.contracts.schema export contracts >/dev/null && echo "contracts/ regenerated"

stack-up: ## start (or reuse) the local Kafka broker and PostgreSQL
	@$(STACK) up

stack-down: ## stop the local Kafka broker and PostgreSQL
	@$(STACK) down

stack-status: ## show the local Kafka broker and PostgreSQL
	@$(STACK) status

up: setup stack-up ## start the six services and the simulator (ports 8001-8009; REPLICAS=all=2)
	@eval "$$($(STACK) env)"; export BALLAST_KAFKA_BOOTSTRAP_SERVERS=$$BALLAST_KAFKA_BOOTSTRAP; \
	  $(STACK) createdb ballast >/dev/null; .venv/bin/ballast auth init >/dev/null; \
	  $(SERVICES) up --profile dev --port-base 8000 $(if $(REPLICAS),--replicas $(REPLICAS))

migrate: setup stack-up ## migrate every service's schema once (the step `make up` runs first)
	@eval "$$($(STACK) env)"; $(STACK) createdb ballast >/dev/null; \
	  $(PY) -m ballast_common.migrations upgrade --all

down: ## stop the services started by `make up` or `make demo`
	@$(SERVICES) down --profile dev; $(SERVICES) down --profile demo

status: ## show the services started by `make up`
	@$(SERVICES) status --profile dev

bench: bench-flow bench-engine bench-tax ## run every benchmark; JSON results in bench/results/

bench-flow: setup stack-up ## end-to-end time of a model change over the 1,000-account demo book
	@$(PY) -m ballast_demo --bench --book plain --out bench/results/flow.json
	@$(PY) -m ballast_demo --bench --book managed --out bench/results/flow-managed.json

bench-scale: setup stack-up ## a 100,000-account book through a model change, stage by stage (ACCOUNTS=2000 for a quick run)
	@$(PY) bench/scale/bench_scale.py $(if $(ACCOUNTS),--accounts $(ACCOUNTS)) $(if $(REPLICAS),--replicas $(REPLICAS))

bench-custodian: setup stack-up ## a book's custodian day: files written, checked, uploaded and reconciled lot by lot (ACCOUNTS=16000: ~2.5M lots)
	@$(PY) bench/scale/bench_scale.py --stop-after custodian --accounts $(or $(ACCOUNTS),16000) --out bench/results/custodian.json

bench-workflow: setup stack-up ## the overlay workflow on one book: a filter, a bulk change, a parent model cascading to 1,000 children (ACCOUNTS=2000 for a quick run)
	@$(PY) bench/workflow/bench_workflow.py $(if $(ACCOUNTS),--accounts $(ACCOUNTS)) $(if $(REPLICAS),--replicas $(REPLICAS))

bench-engine: setup ## engine benchmarks (drift scan, tactical and strategic rebalance)
	@$(PY) bench/engine/bench_engine.py --out bench/results/engine.json

bench-optimizer: setup ## tax-aware direct-index optimizer: 200 sleeves of 500 names, and the same LP in CVXPY
	@UV_PYTHON_DOWNLOADS=never uv sync --frozen --inexact --group bench --no-install-workspace --quiet
	@$(PY) bench/optimizer/bench_optimizer.py --out bench/results/optimizer.json $(if $(CPU),--cpu $(CPU))

bench-tax: setup ## tax engine benchmarks (lot replay, fills per second, wash-sale check)
	@$(PY) bench/tax/bench_tax.py --out bench/results/tax.json

bench-backtest: setup ## tax-alpha backtest, 500 stocks x 10 years (YEARS=, SEED=); JSON + PNG in bench/results/
	@UV_PYTHON_DOWNLOADS=never uv sync --frozen --inexact --package ballast-engine --extra backtest --no-install-workspace --quiet
	@.venv/bin/ballast backtest --years $(or $(YEARS),10) --seed $(or $(SEED),1) --out bench/results/backtest.json --plot bench/results/backtest.png

chaos: setup ## kill -9 each service, the simulator, Postgres, Kafka mid model change; compare (FAULTS=a,b SEED=7)
	@$(PY) bench/chaos/run_chaos.py $(if $(SEED),--seed $(SEED)) $(if $(FAULTS),--faults $(FAULTS)) --out bench/results/chaos.json

migration: setup ## autogenerate a migration: make migration SERVICE=rebalance_svc MSG="add x"
	@test -n "$(SERVICE)" || (echo "usage: make migration SERVICE=<package> MSG=<message>"; exit 2)
	@$(PY) -m ballast_common.migrations revision $(SERVICE) -m "$(MSG)"

clean: down stack-down ## stop everything and delete local state (.state/)
	rm -rf .state
