# ringkv — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
SOURCES := client/src node/src operator/src
PYTEST_ARGS ?=
RUN_NODES ?= 3## nodes `make run` starts
RUN_PORT ?= 7100## the first node's port (the others follow)
RUN_DIR ?= .ringkv## the local cluster's directory

##@ General

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	  /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)
	@printf "\n\033[1mVariables\033[0m (make run RUN_NODES=5 RUN_PORT=7200)\n"
	@awk 'BEGIN {FS = " \\?= |##"} /^RUN_[A-Z]+ \?=/ { printf "  \033[36m%-16s\033[0m %s (default %s)\n", $$1, $$3, $$2 }' $(MAKEFILE_LIST)

##@ Development

# `make run` installs what running needs; everything else adds the dev tools.
$(RUN_STAMP): client/pyproject.toml node/pyproject.toml scripts/bootstrap.sh
	@echo "make run: installing ringkv and ringkv-node into $(VENV) (what running needs; make test adds the dev tools)"
	@PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/bootstrap.sh run
	@touch $@

$(STAMP): client/pyproject.toml node/pyproject.toml operator/pyproject.toml requirements-dev.txt $(wildcard e2e/requirements.txt) scripts/bootstrap.sh
	@echo "installing ringkv, ringkv-node, ringkv-operator and the lint, test and e2e tools into $(VENV)"
	@PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/bootstrap.sh dev
	@touch $(RUN_STAMP) $@

.PHONY: venv
venv: $(STAMP) ## Create .venv and install ringkv, ringkv-node and the dev tools

.PHONY: run
run: $(RUN_STAMP) ## Start a local cluster: RUN_NODES nodes from 127.0.0.1:RUN_PORT, data in RUN_DIR
	$(VENV)/bin/ringkv local up --nodes $(RUN_NODES) --port $(RUN_PORT) --data-dir $(RUN_DIR)

.PHONY: fmt
fmt: $(STAMP) ## Format the code (ruff format, ruff check --fix)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: lint
lint: $(STAMP) ## ruff check + format check, mypy --strict, import-linter contracts, no import circle
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(SOURCES)
	$(VENV)/bin/lint-imports
	$(PY) scripts/import_cycles.py

.PHONY: crds
crds: $(STAMP) ## Regenerate the CRDs (operator/crds, the chart) and docs/operator.md's field tables
	$(PY) -m ringkv_operator.crds

.PHONY: manifests
manifests: crds helm ## Regenerate manifests/ from the chart (helm template): CRDs, RBAC, the operator
	bash scripts/manifests.sh

##@ Testing

.PHONY: test
test: lint test-unit test-integration test-k8s-api ## Lint, unit, integration and tier-3 (kube-apiserver) tests: what CI runs

.PHONY: test-unit
test-unit: $(STAMP) helm ## Unit tests of pure logic, and of the chart with helm (fast)
	$(PY) -m pytest -m "not cluster and not k8s_api and not kind" $(PYTEST_ARGS)

.PHONY: test-integration
test-integration: $(STAMP) ## Tests against real node processes on 127.0.0.1
	$(PY) -m pytest -m "cluster" $(PYTEST_ARGS)

.PHONY: e2e
e2e: e2e-smoke ## End-to-end on kind (builds Kubernetes and images offline on a cold machine)

.PHONY: check
check: test e2e ## The whole gate: make test, then the kind end-to-end tests

##@ Benchmarks

.PHONY: bench
bench: bench-node bench-cluster bench-client ## All benchmarks

.PHONY: bench-node
bench-node: $(STAMP) ## One node vs redis-server (appendfsync always) with wrk / redis-benchmark
	bash bench/node_single.sh

.PHONY: bench-cluster
bench-cluster: $(STAMP) ## 3-node cluster (N=3, quorum, fsync) vs 3-member etcd, both with wrk
	bash bench/cluster.sh

.PHONY: bench-backup
bench-backup: $(STAMP) ## Backup, restore and put_many ingest of 1,000,000 keys vs etcdctl snapshot save/restore
	bash -c '. bench/lib.sh && need etcd-server etcd-client'
	$(PY) -u bench/backup.py

.PHONY: bench-client
bench-client: $(STAMP) ## Python client throughput (async 64 in flight, sync 8 threads)
	$(PY) bench/client.py

include e2e/cluster/k8s.mk

##@ Housekeeping

.PHONY: clean
clean: ## Remove the virtualenv and caches (keeps ./.ringkv data)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
