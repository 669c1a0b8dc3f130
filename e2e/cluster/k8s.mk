# Kubernetes test infrastructure (issue 6). Included from the top-level Makefile,
# which defines VENV := .venv, PY := $(VENV)/bin/python and STAMP (the venv's
# install stamp; empty is fine). Paths are relative to the repository root.
#
# Caches live outside the repo in ~/.cache/ringkv (override with RINGKV_CACHE);
# Go's module and build caches are the usual ~/go/pkg/mod and ~/.cache/go-build.

K8S_CLUSTER_DIR := e2e/cluster
# Empty: build and use the offline node image. Set to a pullable image (e.g.
# kindest/node:v1.32.2) on a machine that reaches a registry to use stock kind.
KIND_NODE_IMAGE ?=
KIND_CLUSTER ?= ringkv-e2e
export KIND_NODE_IMAGE KIND_CLUSTER

##@ Kubernetes

.PHONY: k8s-tools k8s-test-bins helm apiserver-up apiserver-down kind-image kind-up kind-down images e2e-smoke test-k8s-api dockerd-up

k8s-tools: ## Build the pinned Kubernetes binaries, kind, helm, etcd, CoreDNS, local-path (~/.cache/ringkv)
	$(K8S_CLUSTER_DIR)/build-k8s.sh all
	$(K8S_CLUSTER_DIR)/build-tools.sh all

k8s-test-bins: ## Tier 3 binaries only: etcd (Debian) + kube-apiserver + kube-controller-manager
	$(K8S_CLUSTER_DIR)/test-bins.sh

helm: ## helm, pinned, from the Go module proxy (~/.cache/ringkv/bin/helm; the chart's tests need it)
	$(K8S_CLUSTER_DIR)/build-tools.sh helm

test-k8s-api: $(STAMP) k8s-test-bins helm ## Run the tier-3 tests (real kube-apiserver on 127.0.0.1)
	RINGKV_REQUIRE_K8S=1 $(PY) -m pytest e2e/tests operator/tests charts/tests tests/cluster -m "k8s_api and not kind" $(PYTEST_ARGS)

apiserver-up: $(STAMP) k8s-test-bins ## Start etcd + kube-apiserver + controller-manager on loopback; prints KUBECONFIG
	PYTHONPATH=e2e $(PY) -m kubeharness up

apiserver-down: ## Stop what apiserver-up started
	PYTHONPATH=e2e $(PY) -m kubeharness down

dockerd-up: ## Start dockerd (with the CAP_SYS_RESOURCE runtime wrapper where needed)
	$(K8S_CLUSTER_DIR)/dockerd.sh up

kind-image: ## Assemble the offline kind node image (skipped when already in Docker)
	$(K8S_CLUSTER_DIR)/build-kind-image.sh

images: $(STAMP) ## Build the Debian Python base image and our node image (ringkv/node:e2e)
	PYBIN=$(abspath $(PY)) $(K8S_CLUSTER_DIR)/build-app-images.sh

kind-up: ## Create kind cluster ringkv-e2e if absent; kubeconfig ~/.cache/ringkv/kind/ringkv-e2e.kubeconfig
	$(K8S_CLUSTER_DIR)/kind-up.sh up

kind-down: ## Delete the kind cluster (KIND_CLUSTER, default ringkv-e2e)
	$(K8S_CLUSTER_DIR)/kind-up.sh down

e2e-smoke: $(STAMP) k8s-tools kind-up images ## Build all, create kind if absent, load ringkv/node:e2e, run the tier-4 smoke
	$(K8S_CLUSTER_DIR)/kind-up.sh load
	RINGKV_REQUIRE_KIND=1 $(PY) -m pytest e2e/tests -m kind
