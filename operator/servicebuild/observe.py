"""Interpret a build Job and its Pod as one observation; pure."""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

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


ABSENT = Observation(BuildState.ABSENT)


def _condition(job: Mapping[str, Any], condition_type: str) -> Mapping[str, Any] | None:
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("type") == condition_type and condition.get("status") == "True":
            return dict(condition)
    return None


def is_finished(job: Mapping[str, Any]) -> bool:
    return _condition(job, "Complete") is not None or _condition(job, "Failed") is not None


def _build_container_termination(pod: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if pod is None:
        return None
    for state in pod.get("status", {}).get("containerStatuses") or []:
        if state.get("name") == BUILD_CONTAINER:
            terminated: Mapping[str, Any] | None = (state.get("state") or {}).get("terminated")
            return terminated
    return None


def failed_step(tail: str) -> str | None:
    """The Dockerfile step BuildKit reports as failing, if the log names one."""
    steps = _FAILED_STEP_RE.findall(tail)
    return steps[-1] if steps else None


def _failure(job: Mapping[str, Any], pod: Mapping[str, Any] | None, base: Observation) -> Observation:
    failed = _condition(job, "Failed") or {}
    terminated = _build_container_termination(pod) or {}
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
    return Observation(
        state=BuildState.FAILED,
        job_name=base.job_name,
        start_time=base.start_time,
        completion_time=failed.get("lastTransitionTime"),
        reason=reason,
        message=message,
        failed_step=step,
        log_tail=tail or None,
    )


def _completion(status: Mapping[str, Any], pod: Mapping[str, Any] | None, base: Observation) -> Observation:
    terminated = _build_container_termination(pod) or {}
    report = parse_report(terminated.get("message"))
    if report is None:
        return Observation(
            state=BuildState.FAILED,
            job_name=base.job_name,
            start_time=base.start_time,
            completion_time=status.get("completionTime"),
            reason="ReportMissing",
            message="The build Job completed but its Pod holds no build report"
            " (was the Pod deleted before the result was read?).",
        )
    return Observation(
        state=BuildState.SUCCEEDED,
        job_name=base.job_name,
        start_time=base.start_time,
        completion_time=status.get("completionTime"),
        report=report,
    )


def observe(job: Mapping[str, Any] | None, pod: Mapping[str, Any] | None) -> Observation:
    """Interpret the Job of the current generation and its Pod."""
    if job is None:
        return ABSENT
    status = job.get("status") or {}
    base = Observation(
        state=BuildState.PENDING,
        job_name=job.get("metadata", {}).get("name"),
        start_time=status.get("startTime"),
    )
    if _condition(job, "Failed") is not None:
        return _failure(job, pod, base)
    if _condition(job, "Complete") is not None:
        return _completion(status, pod, base)
    if (job.get("spec") or {}).get("suspend"):
        return Observation(BuildState.QUEUED, job_name=base.job_name)
    if status.get("active") and pod is not None and pod.get("status", {}).get("phase") == "Running":
        return Observation(BuildState.RUNNING, job_name=base.job_name, start_time=base.start_time)
    return base
