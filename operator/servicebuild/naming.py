"""Deterministic names and labels of the objects the operator creates."""

import hashlib

MANAGED_BY = "servicebuild-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_UID = "servicebuild.dev/uid"
LABEL_GENERATION = "servicebuild.dev/generation"
ANNOTATION_SERVICEBUILD = "servicebuild.dev/servicebuild"

MAX_JOB_NAME = 63  # the Job controller copies the name into a label value on each Pod
_HASH_LENGTH = 5


def job_name(servicebuild_name: str, uid: str, generation: int) -> str:
    """`<name>-<generation>-<hash of uid>`: one Job per generation, unique across re-created objects."""
    digest = hashlib.sha256(uid.encode()).hexdigest()[:_HASH_LENGTH]
    suffix = f"-{generation}-{digest}"
    prefix = servicebuild_name[: MAX_JOB_NAME - len(suffix)].rstrip("-.")
    return f"{prefix}{suffix}"


def job_labels(uid: str, generation: int) -> dict[str, str]:
    """Labels that let the operator find every Job of one ServiceBuild."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_UID: uid, LABEL_GENERATION: str(generation)}


def uid_selector(uid: str) -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_UID}={uid}"
