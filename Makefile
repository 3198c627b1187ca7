# Entry points for developers and CI. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The version is written once, in pyproject.toml; the image's label and the release manifests read it there.
VERSION := $(shell $(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
# No operator image is published: the committed install.yaml names this placeholder, which the README says.
PLACEHOLDER_IMAGE := registry.example.com/platform/servicebuild-operator:$(VERSION)
RELEASE_MANIFEST ?= install.yaml
# The first image builder on the PATH; ENGINE=podman (or buildah) picks one.
ENGINE ?= $(firstword $(foreach engine,docker podman buildah,$(if $(shell command -v $(engine)),$(engine))))

.DEFAULT_GOAL := help
.PHONY: help install test lint crds bench bench-idle demo demo-down e2e image release-manifests

help: ## list the entry points
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python ## create .venv with the operator, its command line and its test and lint tools
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cli,test,lint]'

test: install ## run the unit and integration tests (needs docker-registry, busybox, git, kubectl, shellcheck)
	$(BIN)/pytest

lint: install ## ruff, mypy (strict) and the import layering contract
	$(BIN)/ruff check operator tests bench e2e
	$(BIN)/ruff format --check operator tests bench e2e
	$(BIN)/mypy
	MYPYPATH=tests:tests/integration $(BIN)/mypy bench
	$(BIN)/lint-imports

crds: install ## regenerate crds/ from the pydantic models
	$(BIN)/python -m servicebuild.api.crd servicebuilds > crds/servicebuilds.servicebuild.dev.yaml
	$(BIN)/python -m servicebuild.api.crd builderpools > crds/builderpools.servicebuild.dev.yaml

image: ## build the operator image with docker, podman or buildah and push it: make image IMAGE=registry/name:tag
	$(if $(IMAGE),,$(error make image needs IMAGE=registry/name:tag, the image to build and push))
	$(if $(ENGINE),,$(error make image needs docker, podman or buildah on the PATH (or ENGINE=…)))
	$(ENGINE) build --build-arg VERSION=$(VERSION) --tag $(IMAGE) .
	$(ENGINE) push $(IMAGE)

release-manifests: ## render install.yaml: the CRD and the operator pinned to IMAGE (default: a placeholder)
	bash deploy/render-install.sh "$(or $(IMAGE),$(PLACEHOLDER_IMAGE))" "$(VERSION)" "$(RELEASE_MANIFEST)"

bench: install ## 500 builds at once without and with a build limit, then 30 one by one (bench/README.md)
	$(BIN)/python bench/bench_many_builds.py --count 500
	$(BIN)/python bench/bench_many_builds.py --count 500 --limit 50 --per-namespace 10
	$(BIN)/python bench/bench_many_builds.py --count 30 --apply-interval 2

bench-idle: install ## the operator at rest with 2,000 then 10,000 idle ServiceBuilds (and restarted among 10,000): CPU, RSS, requests per resync tick
	$(BIN)/python bench/bench_idle.py --count 2000 $(BENCH_IDLE_ARGS)
	$(BIN)/python bench/bench_idle.py --count 10000 $(BENCH_IDLE_ARGS)
	$(BIN)/python bench/bench_idle.py --count 10000 --restart $(BENCH_IDLE_ARGS)

demo: ## kind + local registry, the operator image, sample builds in-cluster (needs docker, kind, kubectl)
	bash e2e/demo.sh

e2e: install demo ## the demo, then its assertions: status against the registry, a warm rebuild
	$(BIN)/pytest -m e2e e2e/

demo-down: ## delete the demo's kind cluster, its local registry and the operator image
	bash e2e/demo-down.sh
