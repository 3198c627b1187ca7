#!/usr/bin/env bash
# `make demo`: a kind cluster with a local registry, the operator built from this checkout, and
# the sample ServiceBuilds built in-cluster by rootless BuildKit. Needs docker, kind and kubectl, and
# a kernel that lets unprivileged processes create user namespaces (e2e/kind-up.sh checks first).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=e2e/lib.sh
source e2e/lib.sh

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "make demo needs ${tool} on the PATH" >&2; exit 1; }
done

# What to look at when a wait fails.
diagnose() {
  k -n "$DEMO_NAMESPACE" get servicebuilds,jobs,pods -o wide || true
  k -n "$DEMO_NAMESPACE" describe servicebuilds || true
  k -n "$OPERATOR_NAMESPACE" logs -l app.kubernetes.io/name=servicebuild-operator --prefix --tail=50 || true  # both replicas
}

bash e2e/kind-up.sh

step "operator image ${OPERATOR_IMAGE}"
docker build --tag "$OPERATOR_IMAGE" .
docker image ls "$OPERATOR_IMAGE"
echo "operator image size: $(docker image inspect -f '{{.Size}}' "$OPERATOR_IMAGE") bytes"
kind load docker-image --name "$CLUSTER_NAME" "$OPERATOR_IMAGE"

step "operator: kubectl apply -k deploy/overlays/kind"
k apply -k deploy/overlays/kind
k wait --for=condition=Established crd/servicebuilds.servicebuild.dev --timeout=60s
# The tag stays "dev" across rebuilds: restart so that the Pod runs the image just loaded.
k -n "$OPERATOR_NAMESPACE" rollout restart deployment/servicebuild-operator
k -n "$OPERATOR_NAMESPACE" rollout status deployment/servicebuild-operator --timeout=180s

step "samples: kubectl apply -k e2e/samples (the first build pulls the base images)"
k apply -k e2e/samples
for name in "${SAMPLES[@]}"; do
  k -n "$DEMO_NAMESPACE" wait --for=condition=Ready "servicebuild/${name}" --timeout=20m ||
    { diagnose; exit 1; }
done

step "kubectl get sb -o wide"
k -n "$DEMO_NAMESPACE" get servicebuilds -o wide

step "digest and size of each image, from status"
k -n "$DEMO_NAMESPACE" get servicebuilds -o custom-columns='NAME:.metadata.name,DIGEST:.status.output.digest,SIZE:.status.output.size,BYTES:.status.output.sizeBytes,LAYERS:.status.output.layers'

step "warm rebuild: a build arg used only in hello's final stage changes"
k -n "$DEMO_NAMESPACE" patch servicebuild hello --type=merge \
  -p '{"spec":{"buildArgs":{"APP_VERSION":"1.0.1"}}}'
k -n "$DEMO_NAMESPACE" wait --for=condition=Ready servicebuild/hello --timeout=10m ||
  { diagnose; exit 1; }
k -n "$DEMO_NAMESPACE" get servicebuild hello -o custom-columns='NAME:.metadata.name,GENERATION:.status.output.generation,CACHED:.status.cache.cachedSteps,STEPS:.status.cache.totalSteps,SECONDS:.status.durationSeconds,DIGEST:.status.output.digest'

echo
echo "Done. kubectl context: ${KUBE_CONTEXT}; registry on the host: localhost:${REGISTRY_PORT}."
echo "make e2e checks the status against the registry; make demo-down removes it all."
