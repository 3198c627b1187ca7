#!/usr/bin/env bash
# `make demo-down`: removes what `make demo` created: the kind cluster, the registry container
# (with the images pushed to it) and the operator image. Pulled base images stay in Docker's cache.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=e2e/lib.sh
source ./lib.sh

step "kind cluster ${CLUSTER_NAME}"
kind delete cluster --name "$CLUSTER_NAME"

step "registry container ${REGISTRY_NAME}"
if docker inspect "$REGISTRY_NAME" >/dev/null 2>&1; then
  docker rm --force --volumes "$REGISTRY_NAME"
fi

step "operator image ${OPERATOR_IMAGE}"
if docker image inspect "$OPERATOR_IMAGE" >/dev/null 2>&1; then
  docker image rm "$OPERATOR_IMAGE"
fi
