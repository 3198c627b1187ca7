"""Deterministic names and labels of the objects the operator creates."""

import hashlib
import json
from collections.abc import Mapping

MANAGED_BY = "servicebuild-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_UID = "servicebuild.dev/uid"
LABEL_GENERATION = "servicebuild.dev/generation"
LABEL_SOURCE = "servicebuild.dev/source"
ANNOTATION_COMMIT = "servicebuild.dev/commit"
ANNOTATION_CONTEXT_DIGEST = "servicebuild.dev/context-digest"
ANNOTATION_SERVICEBUILD = "servicebuild.dev/servicebuild"

MAX_JOB_NAME = 63  # the Job controller copies the name into a label value on each Pod
_HASH_LENGTH = 5


def job_name(
    servicebuild_name: str, uid: str, generation: int, context_digest: str | None = None, attempt: int = 1
) -> str:
    """`<name>-<generation>-<hash>`: one Job per generation, context and attempt, unique across
    re-created objects. The ConfigMap's digest and a retry's attempt number make builds of one
    generation distinct."""
    source_key = (context_digest or "") + (f"#{attempt}" if attempt > 1 else "")
    identity = f"{uid}/{source_key}" if source_key else uid
    digest = hashlib.sha256(identity.encode()).hexdigest()[:_HASH_LENGTH]
    suffix = f"-{generation}-{digest}"
    prefix = servicebuild_name[: MAX_JOB_NAME - len(suffix)].rstrip("-.")
    return f"{prefix}{suffix}"


def job_labels(uid: str, generation: int) -> dict[str, str]:
    """Labels that let the operator find every Job of one ServiceBuild."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_UID: uid, LABEL_GENERATION: str(generation)}


def uid_selector(uid: str) -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_UID}={uid}"


def context_digest(data: Mapping[str, str], binary_data: Mapping[str, str]) -> str:
    """`sha256:<hex>` of a ConfigMap's content: equal content, equal digest, whatever the key order."""
    canonical = json.dumps({"data": dict(data), "binaryData": dict(binary_data)}, sort_keys=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
