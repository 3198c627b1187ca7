"""Interpret a build Job and its Pod as one observation; pure (the clock is passed in)."""

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from servicebuild.naming import ANNOTATION_COMMIT, ANNOTATION_CONTEXT_DIGEST
from servicebuild.render.job import BUILD_CONTAINER
from servicebuild.report import BuildReport, log_tail, parse_report

# BuildKit's plain progress names the failing step as ` > [stage 2/4] RUN make:` above the error.
_FAILED_STEP_RE = re.compile(r"^\s*> (\[[^\]]+\] .+?):?\s*$", re.MULTILINE)
_SOLVE_ERROR_RE = re.compile(r"^(?:#\d+ )?ERROR: (.+)$", re.MULTILINE)


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
    """CamelCase failure reason, when failed."""
    message: str | None = None
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


def _condition(job: Mapping[str, Any], condition_type: str) -> Mapping[str, Any] | None:
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("type") == condition_type and condition.get("status") == "True":
            return dict(condition)
    return None


def is_finished(job: Mapping[str, Any]) -> bool:
    return _condition(job, "Complete") is not None or _condition(job, "Failed") is not None


def _build_container_state(pod: Mapping[str, Any] | None) -> Mapping[str, Any]:
    for status in (pod or {}).get("status", {}).get("containerStatuses") or []:
        if status.get("name") == BUILD_CONTAINER:
            return dict(status.get("state") or {})
    return {}


def failed_step(tail: str) -> str | None:
    """The Dockerfile step BuildKit reports as failing, if the log names one."""
    steps = _FAILED_STEP_RE.findall(tail)
    return steps[-1] if steps else None


def _failure(job: Mapping[str, Any], pod: Mapping[str, Any] | None, base: Observation) -> Observation:
    failed = _condition(job, "Failed") or {}
    terminated = _build_container_state(pod).get("terminated") or {}
    tail = log_tail(terminated.get("message"))
    step = failed_step(tail) if tail else None
    if failed.get("reason") == "DeadlineExceeded":
        reason, message = "DeadlineExceeded", "The build ran longer than spec.timeout and was stopped."
    else:
        errors = _SOLVE_ERROR_RE.findall(tail) if tail else []
        detail = errors[-1] if errors else failed.get("message") or "the build container failed"
        where = f" at {step}" if step else ""
        exit_code = terminated.get("exitCode")
        code = f" (exit code {exit_code})" if exit_code is not None else ""
        reason, message = "BuildFailed", f"Build failed{where}{code}: {detail}"
    return replace(
        base,
        state=BuildState.FAILED,
        completion_time=failed.get("lastTransitionTime"),
        reason=reason,
        message=message,
        failed_step=step,
        log_tail=tail or None,
    )


def _completion(status: Mapping[str, Any], pod: Mapping[str, Any] | None, base: Observation) -> Observation:
    terminated = _build_container_state(pod).get("terminated") or {}
    report = parse_report(terminated.get("message"))
    completed = replace(base, completion_time=status.get("completionTime"))
    if report is None:
        return replace(
            completed,
            state=BuildState.FAILED,
            reason="ReportMissing",
            message="The build Job completed but its Pod holds no build report"
            " (was the Pod deleted before the result was read?).",
        )
    return replace(completed, state=BuildState.SUCCEEDED, report=report)


def _why_not_started(pod: Mapping[str, Any] | None) -> str:
    """What keeps the Pod from starting, in the words of the scheduler or the kubelet."""
    for condition in (pod or {}).get("status", {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason', 'Unschedulable')}: {condition.get('message', '')}".rstrip(": ")
    statuses = [
        *((pod or {}).get("status", {}).get("initContainerStatuses") or []),
        *((pod or {}).get("status", {}).get("containerStatuses") or []),
    ]
    for status in statuses:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] != "PodInitializing":
            return f"{status.get('name')}: {waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    return "no Pod started" if pod is None else "the Pod has not started"


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
    base = Observation(
        state=BuildState.PENDING,
        job_name=metadata.get("name"),
        start_time=status.get("startTime"),
        commit=(metadata.get("annotations") or {}).get(ANNOTATION_COMMIT),
        context_digest=(metadata.get("annotations") or {}).get(ANNOTATION_CONTEXT_DIGEST),
    )
    if _condition(job, "Failed") is not None:
        return _failure(job, pod, base)
    if _condition(job, "Complete") is not None:
        return _completion(status, pod, base)
    if (job.get("spec") or {}).get("suspend"):
        return replace(base, state=BuildState.QUEUED, start_time=None)
    if status.get("active") and pod is not None and pod.get("status", {}).get("phase") == "Running":
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
        reason="PendingTimeout",
        message=f"The build Pod did not start within spec.pendingTimeout ({_why_not_started(pod)}).",
    )
