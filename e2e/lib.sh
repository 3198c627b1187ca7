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

# Rootless BuildKit in the kind nodes creates user namespaces, and the nodes run on this host's kernel
# (with Docker on this Linux host). Says what to change when the kernel refuses them. A sysctl that is
# not there is not checked: older kernels have no AppArmor restriction, and Docker Desktop's VM is not
# this host. PROC_SYS_DIR lets the tests point the check at a fake /proc/sys.
check_user_namespaces() {
  local sysctls="${PROC_SYS_DIR:-/proc/sys}" refused=0 value
  value="$(cat "${sysctls}/user/max_user_namespaces" 2>/dev/null || true)"
  if [ "$value" = 0 ]; then
    cat >&2 <<'TEXT'
user.max_user_namespaces is 0 on this host: no process may create a user namespace, and rootless
BuildKit in the kind nodes needs them. Allow them (any value above 0) until the next reboot:
  sudo sysctl -w user.max_user_namespaces=28633
TEXT
    refused=1
  fi
  value="$(cat "${sysctls}/kernel/apparmor_restrict_unprivileged_userns" 2>/dev/null || true)"
  if [ "$value" = 1 ]; then
    cat >&2 <<'TEXT'
kernel.apparmor_restrict_unprivileged_userns=1 on this host (the default since Ubuntu 24.04): AppArmor
keeps unconfined, unprivileged processes from using user namespaces, so rootless BuildKit cannot start
in the kind nodes (rootlesskit fails to set up its UID map). Either lift the restriction until the
next reboot:
  sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0
or allow `userns` to rootlesskit (/usr/bin/rootlesskit in the BuildKit image) with an AppArmor
profile: https://rootlesscontaine.rs/getting-started/common/apparmor/
TEXT
    refused=1
  fi
  return "$refused"
}
