"""Interpret a build Job and its Pod as one observation; pure (the clock is passed in)."""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from servicebuild.failures import Reason, classify, classify_pending
from servicebuild.naming import ANNOTATION_COMMIT, ANNOTATION_CONTEXT_DIGEST
from servicebuild.render.job import BUILD_CONTAINER
from servicebuild.report import BuildReport, log_tail, parse_report


class BuildState(StrEnum):
    ABSENT = "Absent"
    QUEUED = "Queued"
    """The Job exists but is suspended (e.g. held by Kueue)."""
    PENDING = "Pending"
    """The Job exists and its Pod has not started building yet."""
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class Observation:
    """What one Job (and its Pod) says about a build."""

    state: BuildState
    job_name: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    report: BuildReport | None = None
    reason: str | None = None
    """CamelCase failure reason, when failed (`servicebuild.failures.Reason` for a failed build)."""
    message: str | None = None
    transient: bool = False
    """Whether the failure is of the moment (an evicted Pod, an unreachable registry) and worth retrying."""
    failed_step: str | None = None
    log_tail: str | None = None
    commit: str | None = None
    """The git commit the Job builds."""
    context_digest: str | None = None
    """The digest of the ConfigMap context the Job builds."""


ABSENT = Observation(BuildState.ABSENT)


@dataclass(frozen=True)
class PendingLimit:
    """How long a build Pod may wait to start, and the time now."""

    now: str
    seconds: int


FAILED_CONDITIONS = ("Failed", "FailureTarget")
"""Since Kubernetes 1.31 the Job controller sets `FailureTarget` (or `SuccessCriteriaMet`) as soon as the
Job's fate is decided and adds `Failed` (or `Complete`) only once its Pods have terminated."""
SUCCEEDED_CONDITIONS = ("Complete", "SuccessCriteriaMet")


def _condition(job: Mapping[str, Any], *condition_types: str) -> Mapping[str, Any] | None:
    """The first true condition of these types, in the order given."""
    conditions = job.get("status", {}).get("conditions") or []
    for condition_type in condition_types:
        for condition in conditions:
            if condition.get("type") == condition_type and condition.get("status") == "True":
                return dict(condition)
    return None


def is_finished(job: Mapping[str, Any]) -> bool:
    """Whether the Job's build no longer runs (and so can push nothing more, and holds no build slot).

    True with a finishing condition, and also before it: the Job controller counts an ended Pod out of
    `status.active` at once but adds the condition only seconds later. A started Job that is neither
    suspended nor active has no Pod running: with `backoffLimit: 0` it never makes another.
    """
    if _condition(job, *SUCCEEDED_CONDITIONS, *FAILED_CONDITIONS) is not None:
        return True
    status = job.get("status") or {}
    return (
        bool(status.get("startTime")) and not status.get("active") and not job.get("spec", {}).get("suspend")
    )


def _build_container_state(pod: Mapping[str, Any] | None) -> Mapping[str, Any]:
    for status in (pod or {}).get("status", {}).get("containerStatuses") or []:
        if status.get("name") == BUILD_CONTAINER:
            return dict(status.get("state") or {})
    return {}


def _failure(job: Mapping[str, Any], pod: Mapping[str, Any] | None, base: Observation) -> Observation:
    failed = _condition(job, *FAILED_CONDITIONS) or {}
    message = (_build_container_state(pod).get("terminated") or {}).get("message")
    failure = classify(job, pod, message)
    return replace(
        base,
        state=BuildState.FAILED,
        completion_time=base.completion_time or failed.get("lastTransitionTime"),
        reason=failure.reason,
        message=failure.message,
        transient=failure.transient,
        failed_step=failure.failed_step,
        log_tail=log_tail(message) or None,
    )


def _completion(status: Mapping[str, Any], pod: Mapping[str, Any] | None, base: Observation) -> Observation:
    terminated = _build_container_state(pod).get("terminated") or {}
    report = parse_report(terminated.get("message"))
    completed = replace(base, completion_time=base.completion_time or status.get("completionTime"))
    if report is None:
        return replace(
            completed,
            state=BuildState.FAILED,
            reason=Reason.REPORT_MISSING,
            message="The build Job completed but its Pod holds no build report"
            " (was the Pod deleted before the result was read?).",
        )
    return replace(completed, state=BuildState.SUCCEEDED, report=report)


def _waited_too_long(job: Mapping[str, Any], limit: PendingLimit) -> bool:
    since = job.get("status", {}).get("startTime") or job.get("metadata", {}).get("creationTimestamp")
    if not since:
        return False
    try:
        waited = datetime.fromisoformat(limit.now) - datetime.fromisoformat(since)
    except ValueError:
        return False
    return waited.total_seconds() > limit.seconds


def observe(
    job: Mapping[str, Any] | None, pod: Mapping[str, Any] | None, pending: PendingLimit | None = None
) -> Observation:
    """Interpret the Job of the current build and its Pod."""
    if job is None:
        return ABSENT
    metadata = job.get("metadata") or {}
    status = job.get("status") or {}
    container = _build_container_state(pod)
    terminated: Mapping[str, Any] = container.get("terminated") or {}
    base = Observation(
        state=BuildState.PENDING,
        job_name=metadata.get("name"),
        start_time=status.get("startTime"),
        # When the build ended: the Job's own completion comes seconds later.
        completion_time=terminated.get("finishedAt"),
        commit=(metadata.get("annotations") or {}).get(ANNOTATION_COMMIT),
        context_digest=(metadata.get("annotations") or {}).get(ANNOTATION_CONTEXT_DIGEST),
    )
    # An ended build container ends the build: the Job controller marks the Job finished seconds later.
    failed_early = bool(terminated) and terminated.get("exitCode") != 0
    if _condition(job, *FAILED_CONDITIONS) is not None or failed_early:
        return _failure(job, pod, base)
    if _condition(job, *SUCCEEDED_CONDITIONS) is not None or bool(terminated):
        return _completion(status, pod, base)
    if (job.get("spec") or {}).get("suspend"):
        return replace(base, state=BuildState.QUEUED, start_time=None)
    if container.get("running") or (pod or {}).get("status", {}).get("phase") == "Running":
        return replace(base, state=BuildState.RUNNING)
    return _not_started(job, pod, pending, base)


def _not_started(
    job: Mapping[str, Any], pod: Mapping[str, Any] | None, pending: PendingLimit | None, base: Observation
) -> Observation:
    """Pending, or failed with PendingTimeout once it has waited longer than the limit."""
    if pending is None or not _waited_too_long(job, pending):
        return base
    return replace(
        base,
        state=BuildState.FAILED,
        reason=Reason.PENDING_TIMEOUT,
        message=f"The build Pod did not start within spec.pendingTimeout: {classify_pending(pod).message}",
    )
