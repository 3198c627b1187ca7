#!/usr/bin/env bash
# A kind cluster with a local registry, set up the way kind's guide does it:
# https://kind.sigs.k8s.io/docs/user/local-registry/ (steps 1 to 5 below). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=e2e/lib.sh
source ./lib.sh

step "0. this host's kernel lets rootless BuildKit create user namespaces"
# Before anything is created: on a refusing host the cluster comes up but no build can start.
check_user_namespaces || exit 1

step "1. registry container ${REGISTRY_NAME} (${REGISTRY_IMAGE}) on 127.0.0.1:${REGISTRY_PORT}"
running="$(docker inspect -f '{{.State.Running}}' "$REGISTRY_NAME" 2>/dev/null || true)"
if [ "$running" = false ]; then
  docker start "$REGISTRY_NAME"
elif [ "$running" != true ]; then
  docker run -d --restart=always -p "127.0.0.1:${REGISTRY_PORT}:5000" --network bridge \
    --name "$REGISTRY_NAME" "$REGISTRY_IMAGE"
fi

step "2. kind cluster ${CLUSTER_NAME} with containerd's registry config directory"
if kind get clusters | grep -qx "$CLUSTER_NAME"; then
  echo "cluster ${CLUSTER_NAME} exists"
else
  create=(--name "$CLUSTER_NAME" --wait 180s --config=-)
  if [ -n "${KIND_NODE_IMAGE:-}" ]; then create+=(--image "$KIND_NODE_IMAGE"); fi
  kind create cluster "${create[@]}" <<'YAML'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
- |-
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
YAML
fi

step "3. nodes pull localhost:${REGISTRY_PORT}/... from http://${REGISTRY_NAME}:5000"
registry_dir="/etc/containerd/certs.d/localhost:${REGISTRY_PORT}"
for node in $(kind get nodes --name "$CLUSTER_NAME"); do
  docker exec "$node" mkdir -p "$registry_dir"
  printf '[host."http://%s:5000"]\n' "$REGISTRY_NAME" |
    docker exec -i "$node" cp /dev/stdin "${registry_dir}/hosts.toml"
done

step "4. registry on the kind network (build Pods reach it as ${REGISTRY_NAME}:5000)"
if [ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REGISTRY_NAME")" = null ]; then
  docker network connect kind "$REGISTRY_NAME"
fi

step "5. the local-registry-hosting ConfigMap (KEP-1755)"
k apply -f - <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "localhost:${REGISTRY_PORT}"
    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"
YAML
