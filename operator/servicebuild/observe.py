"""Interpret a build Job and its Pod as one observation; pure (the clock is passed in)."""

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from servicebuild.buildlog import parse_plain
from servicebuild.cachemetrics import parse_cache_metrics
from servicebuild.failures import Failure, Reason, classify, classify_pending, classify_run, scrub
from servicebuild.jobs import BuildJob, BuildPod
from servicebuild.render.job import BUILD_CONTAINER
from servicebuild.render.pool_run import RunState
from servicebuild.report import BuildReport, log_tail, report_from_files
from servicebuild.report_budget import BuildFacts, facts_from_build, parse_message


class BuildState(StrEnum):
    ABSENT = "Absent"
    QUEUED = "Queued"
    """The Job exists but is suspended (e.g. held by Kueue)."""
    PENDING = "Pending"
    """The Job exists and its Pod has not started building yet."""
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


ENDED = frozenset({BuildState.SUCCEEDED, BuildState.FAILED})


@dataclass(frozen=True)
class Observation:
    """What one Job (and its Pod) says about a build."""

    state: BuildState
    job_name: str | None = None
    pod_name: str | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    """When the build container ended (the Job's own completion comes seconds later)."""
    report: BuildReport | None = None
    """The build's report, when it succeeded."""
    facts: BuildFacts | None = None
    """What the build said beyond the report (base images, first cache miss, warnings), when it succeeded;
    `facts.truncated` when some are only in the build container's log."""
    failure: Failure | None = None
    """Why it failed, when it failed."""
    log_tail: str | None = None
    """The failed build's last log lines."""
    commit: str | None = None
    """The git commit the Job builds."""
    context_digest: str | None = None
    """The digest of the ConfigMap context the Job builds."""
    provenance: str | None = None
    """The provenance mode the Job asks BuildKit for."""


ABSENT = Observation(BuildState.ABSENT)


@dataclass(frozen=True)
class PendingLimit:
    """How long a build Pod may wait to start its build, and the time now."""

    now: datetime
    limit: timedelta


def observe(job: BuildJob | None, pod: BuildPod | None, pending: PendingLimit | None = None) -> Observation:
    """Interpret the Job of the current build and its Pod.

    An ended build container ends the build: the Job controller marks the Job finished seconds later,
    and the report (or the log tail) is already in the container's termination message.
    """
    if job is None:
        return ABSENT
    container = pod.container(BUILD_CONTAINER) if pod is not None else None
    ended = container is not None and container.state == "terminated"
    base = Observation(
        state=BuildState.PENDING,
        job_name=job.name,
        pod_name=pod.name if pod is not None else None,
        start_time=job.start_time,
        completion_time=container.finished_at if container is not None and ended else None,
        commit=job.commit,
        context_digest=job.context_digest,
        provenance=job.provenance,
    )
    failed_early = container is not None and ended and container.exit_code != 0
    if job.failed is not None or failed_early:
        return _failure(job, pod, base)
    if job.succeeded is not None or ended:
        return _completion(job, container.message if container is not None else "", base)
    if job.suspended:
        return replace(base, state=BuildState.QUEUED, start_time=None)
    if (container is not None and container.state == "running") or (
        pod is not None and pod.phase == "Running"
    ):
        return replace(base, state=BuildState.RUNNING)
    return _not_started(job, pod, pending, base)


def _failure(job: BuildJob, pod: BuildPod | None, base: Observation) -> Observation:
    container = pod.container(BUILD_CONTAINER) if pod is not None else None
    message = container.message if container is not None and container.state == "terminated" else None
    failed = job.failed
    return replace(
        base,
        state=BuildState.FAILED,
        completion_time=base.completion_time or (failed.time if failed is not None else None),
        failure=classify(job, pod, message),
        log_tail=log_tail(message) or None,
    )


def _completion(job: BuildJob, message: str, base: Observation) -> Observation:
    completed = replace(base, completion_time=base.completion_time or job.completion_time)
    parsed = parse_message(message)
    if parsed is None:
        missing = Failure(
            Reason.REPORT_MISSING,
            "The build Job completed but its Pod holds no build report"
            " (was the Pod deleted before the result was read?).",
        )
        return replace(completed, state=BuildState.FAILED, failure=missing)
    return replace(completed, state=BuildState.SUCCEEDED, report=parsed.report, facts=parsed.facts)


def _not_started(
    job: BuildJob, pod: BuildPod | None, pending: PendingLimit | None, base: Observation
) -> Observation:
    """Pending, or failed with PendingTimeout once it has waited longer than the limit."""
    since = job.start_time or job.created
    if pending is None or since is None or pending.now - since <= pending.limit:
        return base
    timeout = Failure(
        Reason.PENDING_TIMEOUT,
        f"The build Pod did not start within spec.pendingTimeout: {classify_pending(pod).message}",
    )
    return replace(base, state=BuildState.FAILED, failure=timeout)


def observe_run(run: RunState | None, sbom_scanner: str | None = None) -> Observation:
    """Interpret a build buildctl runs against a builder pool: absent when this process runs none (or
    stopped it), else running, or ended with what buildctl wrote."""
    if run is None or run.stopped:
        return ABSENT
    base = Observation(
        state=BuildState.RUNNING,
        job_name=run.name,
        start_time=run.started,
        completion_time=run.ended,
        commit=run.run.commit,
        context_digest=run.run.context_digest,
        provenance=run.run.provenance,
    )
    if run.ended is None:
        return base
    if run.timed_out:
        timeout = Failure(Reason.DEADLINE_EXCEEDED, "The build ran longer than spec.timeout and was stopped.")
        return replace(base, state=BuildState.FAILED, failure=timeout, log_tail=log_tail(run.log) or None)
    if run.exit_code != 0:
        failure = classify_run(run.log, sbom_scanner)
        return replace(base, state=BuildState.FAILED, failure=failure, log_tail=log_tail(run.log) or None)
    report = report_from_files(run.metadata, run.cache_metrics, cache_export="--export-cache" in run.run.argv)
    if report is None:
        missing = Failure(
            Reason.REPORT_MISSING, "buildctl ended well but wrote no image digest in its metadata file."
        )
        return replace(base, state=BuildState.FAILED, failure=missing)
    facts = facts_from_build(parse_plain(run.log), parse_cache_metrics(run.cache_metrics or ""))
    return replace(base, state=BuildState.SUCCEEDED, report=report, facts=facts)


def without_secrets(observation: Observation, secrets: Iterable[str]) -> Observation:
    """The failure without any of these values, or their base64 forms: a build log may echo one."""
    failure = observation.failure
    if failure is None:
        return observation
    values = list(secrets)
    return replace(
        observation,
        failure=replace(
            failure,
            message=scrub(failure.message, values),
            failed_step=scrub(failure.failed_step, values) if failure.failed_step else None,
        ),
        log_tail=scrub(observation.log_tail, values) if observation.log_tail else None,
    )
