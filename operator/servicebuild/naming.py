"""Deterministic names and labels of the objects the operator creates."""

import hashlib
import json
import re
from collections.abc import Mapping

MANAGED_BY = "servicebuild-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_UID = "servicebuild.dev/uid"
LABEL_GENERATION = "servicebuild.dev/generation"
LABEL_SOURCE = "servicebuild.dev/source"
ANNOTATION_COMMIT = "servicebuild.dev/commit"
ANNOTATION_CONTEXT_DIGEST = "servicebuild.dev/context-digest"
ANNOTATION_SERVICEBUILD = "servicebuild.dev/servicebuild"
ANNOTATION_BUILD = "servicebuild.dev/build"
ANNOTATION_TRIGGER = "servicebuild.dev/trigger"
ANNOTATION_PROVENANCE = "servicebuild.dev/provenance"
"""On a build Job: the provenance mode the build asks BuildKit for (`min`, `max` or `off`)."""
ANNOTATION_SBOM_SCANNER = "servicebuild.dev/sbom-scanner"
"""On a build Job that makes an SBOM: the scanner image BuildKit pulls for it."""
ANNOTATION_REQUESTED_AT = "servicebuild.dev/requested-at"
"""On a ServiceBuild: changing its value (any value, e.g. a timestamp) asks for a new build."""
ANNOTATION_SOURCE_PUSHED_AT = "servicebuild.dev/source-pushed-at"
"""On a ServiceBuild: when a webhook announced a push to its repository (RFC 3339); its polled revision
is looked up again at once."""

LABEL_BUILDERPOOL = "servicebuild.dev/builderpool"
"""On a builder pool's daemon, its Service and its Secrets: the BuilderPool's name."""
LABEL_BUILDERPOOL_NAMESPACE = "servicebuild.dev/builderpool-namespace"
"""On a pool's CA Secret, in the operator's namespace: the namespace of the BuilderPool it serves."""
ANNOTATION_SPEC_HASH = "servicebuild.dev/spec-hash"
"""On an object the operator renders for a BuilderPool: the hash of what it rendered, so that an object
is replaced only when the rendering changed."""
ANNOTATION_TLS = "servicebuild.dev/tls"
"""On a pool daemon's Pod template: the server certificate's fingerprint; a renewal restarts the daemon,
which reads its certificate only when it starts."""

MAX_JOB_NAME = 63  # the Job controller copies the name into a label value on each Pod
_HASH_LENGTH = 5


def job_name(servicebuild_name: str, uid: str, build: int, build_key: str) -> str:
    """`<name>-<build>-<hash>`: one Job per build and attempt, unique across re-created objects.

    `build_key` (`build_key()`) is what the build is: with its generation and source in the hash, a build
    number that was reused (its status never written) cannot adopt another build's Job.
    """
    digest = hashlib.sha256(f"{uid}/{build_key}".encode()).hexdigest()[:_HASH_LENGTH]
    suffix = f"-{build}-{digest}"
    prefix = servicebuild_name[: MAX_JOB_NAME - len(suffix)].rstrip("-.")
    return f"{prefix}{suffix}"


def build_key(build: int, generation: int, context_digest: str | None, attempt: int) -> str:
    """What one attempt at one build is, for its Job's name."""
    return f"{build}/{generation}/{context_digest or ''}#{attempt}"


def job_labels(uid: str, generation: int) -> dict[str, str]:
    """Labels that let the operator find every Job of one ServiceBuild."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_UID: uid, LABEL_GENERATION: str(generation)}


_DNS_LABEL_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def pool_daemon_name(pool: str) -> str:
    """`<pool>-buildkitd`: the pool's workload, Service and server Secret. A Service name is a DNS label
    (63 characters, no dots, a letter first); a pool name that cannot make one gets a hashed form."""
    name = f"{pool}-buildkitd"
    if len(name) <= MAX_JOB_NAME and _DNS_LABEL_RE.fullmatch(name):
        return name
    digest = hashlib.sha256(pool.encode()).hexdigest()[:_HASH_LENGTH]
    readable = re.sub(r"[^a-z0-9]+", "-", pool).strip("-")[: MAX_JOB_NAME - 18]
    return f"buildkitd-{readable}-{digest}".replace("--", "-")


def pool_ca_secret_name(namespace: str, pool: str) -> str:
    """The Secret in the operator's namespace holding a pool's CA and the operator's client certificate:
    one per pool of every namespace, so the name carries both, hashed to stay unique when cut."""
    digest = hashlib.sha256(f"{namespace}/{pool}".encode()).hexdigest()[:_HASH_LENGTH]
    return f"builderpool-{namespace}-{pool}"[: 253 - 1 - _HASH_LENGTH].rstrip("-.") + f"-{digest}"


def uid_selector(uid: str) -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_UID}={uid}"


def context_digest(data: Mapping[str, str], binary_data: Mapping[str, str]) -> str:
    """`sha256:<hex>` of a ConfigMap's content: equal content, equal digest, whatever the key order."""
    canonical = json.dumps({"data": dict(data), "binaryData": dict(binary_data)}, sort_keys=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
