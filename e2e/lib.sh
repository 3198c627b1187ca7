# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this file
# Settings shared by the demo scripts beside this file (sourced, not run).

CLUSTER_NAME="${CLUSTER_NAME:-servicebuild}"
KUBE_CONTEXT="kind-${CLUSTER_NAME}"
# The local registry as kind's guide names it (https://kind.sigs.k8s.io/docs/user/local-registry/).
# Inside the kind network it is kind-registry:5000: deploy/overlays/kind and e2e/samples use that name.
REGISTRY_NAME="kind-registry"
REGISTRY_PORT="5001"                  # on the host: localhost:5001
REGISTRY_IMAGE="registry:2.8.3"
OPERATOR_IMAGE="servicebuild-operator:dev"   # the tag deploy/overlays/kind runs
OPERATOR_NAMESPACE="servicebuild-system"
DEMO_NAMESPACE="servicebuild-demo"
SAMPLES=(hello hello-debug)

# kubectl, always against the demo cluster whatever the current context is.
k() { kubectl --context "$KUBE_CONTEXT" "$@"; }

step() { printf '\n==> %s\n' "$*"; }
