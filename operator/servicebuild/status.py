"""Decide the whole status of a ServiceBuild from what was observed; pure (the clock is passed in)."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from servicebuild.api.models import (
    BuildOutput,
    CacheStats,
    Condition,
    ConditionStatus,
    Phase,
    QueueStatus,
    ServiceBuildStatus,
    SourceStatus,
)
from servicebuild.observe import BuildState, Observation

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CACHE_EXPORTED = "CacheExported"
"""A warning condition of the last successful build: False when its registry cache export failed."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the ServiceBuild, one per transition."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    """Everything the decision needs besides the current status."""

    generation: int
    observation: Observation
    output: BuildOutput | None = None
    """The verified output, when the build of this generation succeeded and was read back."""
    invalid_spec: str | None = None
    """Why the spec is invalid, naming the field."""
    source: SourceStatus | None = None
    """What the build of this outcome builds: the resolved commit or the ConfigMap's digest."""
    waiting: QueueStatus | None = None
    """Set when the build waits for a free slot instead of starting."""
    waiting_reason: str = ""
    """Why it waits, for the message."""
    attempt: int = 1
    """Which attempt at this generation the observation is about."""
    retry_at: str | None = None
    """Set when the attempt failed transiently and the next one starts at this time."""
    max_attempts: int = 1


def _seconds_between(start: str | None, end: str | None) -> int | None:
    if not start or not end:
        return None
    try:
        delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    except ValueError:
        return None
    return max(0, round(delta.total_seconds()))


ConditionValue = tuple[ConditionStatus, str, str]
"""A condition's status, reason and message."""


@dataclass(frozen=True)
class _Stamp:
    """What every condition of one decision shares."""

    previous: ServiceBuildStatus
    generation: int
    now: str

    def condition(self, condition_type: str, value: ConditionValue) -> Condition:
        status, reason, message = value
        old = self.previous.condition(condition_type)
        flipped = old is None or old.status != status
        return Condition(
            type=condition_type,
            status=status,
            reason=reason,
            message=message,
            observed_generation=self.generation,
            last_transition_time=self.now if flipped or old is None else old.last_transition_time,
        )


def _conditions(
    stamp: _Stamp, *, ready: ConditionValue, reconciling: ConditionValue, stalled: ConditionValue
) -> list[Condition]:
    return [
        stamp.condition(condition_type, value)
        for condition_type, value in ((READY, ready), (RECONCILING, reconciling), (STALLED, stalled))
    ]


def _kept_cache_condition(previous: ServiceBuildStatus) -> list[Condition]:
    """CacheExported describes the last successful build: it stays until the next one decides it."""
    kept = previous.condition(CACHE_EXPORTED)
    return [kept] if kept is not None else []


def _cache_condition(stamp: _Stamp, value: ConditionValue | None) -> list[Condition]:
    """A success decides CacheExported; no condition when the build had no cache to export."""
    return [] if value is None else [stamp.condition(CACHE_EXPORTED, value)]


def _cache_export(outcome: Outcome) -> ConditionValue | None:
    """True or False as the build reported it; None (no condition) when it had no cache to export."""
    report = outcome.observation.report
    if report is None or report.cache_exported is None:
        return None
    if report.cache_exported:
        return ("True", "CacheExported", "The build cache was exported to the registry.")
    return (
        "False",
        "CacheExportFailed",
        (
            "The image was pushed but its build cache was not exported, so the next build may run cold:"
            " check that the push credentials may write spec.cache.ref and, for a registry served over plain"
            " HTTP, that its host is in the operator's SERVICEBUILD_INSECURE_REGISTRIES."
        ),
    )


def _stalled_status(previous: ServiceBuildStatus, outcome: Outcome, now: str) -> ServiceBuildStatus:
    observation = outcome.observation
    reason = "InvalidSpec" if outcome.invalid_spec else observation.reason or "BuildFailed"
    message = outcome.invalid_spec or observation.message or "The build failed."
    if outcome.attempt > 1:
        message = f"Attempt {outcome.attempt} of {outcome.max_attempts}: {message}"
    hint = f" Logs: kubectl logs job/{observation.job_name} -c buildkit." if observation.job_name else ""
    detail = f"{message}\n{observation.log_tail}" if observation.log_tail else message
    return ServiceBuildStatus(
        observed_generation=outcome.generation,
        phase=Phase.FAILED,
        conditions=_conditions(
            _Stamp(previous, outcome.generation, now),
            ready=("False", reason, message),
            reconciling=("False", reason, "Nothing will change until the spec does."),
            stalled=("True", reason, detail),
        )
        + _kept_cache_condition(previous),
        message=message + hint,
        job_name=observation.job_name,
        start_time=observation.start_time,
        completion_time=observation.completion_time,
        duration_seconds=_seconds_between(observation.start_time, observation.completion_time),
        output=previous.output,
        cache=previous.cache,
        source=outcome.source,
        failed_step=observation.failed_step,
        log_tail=observation.log_tail,
        attempt=_attempt(outcome),
    )


def _succeeded_status(previous: ServiceBuildStatus, outcome: Outcome, now: str) -> ServiceBuildStatus:
    observation = outcome.observation
    output = outcome.output
    if output is None:
        raise ValueError("a succeeded outcome needs the verified output")
    report = observation.report
    cache = previous.cache
    if report is not None and report.cached_steps is not None and report.total_steps is not None:
        cache = CacheStats(cached_steps=report.cached_steps, total_steps=report.total_steps)
    message = f"Pushed {output.image} ({output.size})"
    cache_export = _cache_export(outcome)
    if cache_export is not None and cache_export[0] == "False":
        message += "; the cache export failed"
    stamp = _Stamp(previous, outcome.generation, now)
    return ServiceBuildStatus(
        observed_generation=outcome.generation,
        phase=Phase.SUCCEEDED,
        conditions=_conditions(
            stamp,
            ready=("True", "BuildSucceeded", message),
            reconciling=("False", "BuildSucceeded", "The image of this generation is built and pushed."),
            stalled=("False", "BuildSucceeded", ""),
        )
        + _cache_condition(stamp, cache_export),
        message=message,
        job_name=observation.job_name,
        start_time=observation.start_time,
        completion_time=observation.completion_time,
        duration_seconds=_seconds_between(observation.start_time, observation.completion_time),
        output=output,
        cache=cache,
        source=outcome.source,
        attempt=_attempt(outcome),
    )


_IN_PROGRESS = {
    BuildState.ABSENT: (Phase.PENDING, "JobCreating", "Creating the build Job."),
    BuildState.QUEUED: (Phase.PENDING, "BuildQueued", "The build Job is suspended, waiting for admission."),
    BuildState.PENDING: (Phase.PENDING, "BuildPending", "The build Job is waiting for its Pod to start."),
    BuildState.RUNNING: (Phase.BUILDING, "BuildRunning", "BuildKit is building and pushing the image."),
}


def _attempt(outcome: Outcome) -> int | None:
    """Shown from the second attempt on; the first is the normal case."""
    return outcome.attempt if outcome.attempt > 1 else None


def _in_progress(outcome: Outcome) -> tuple[Phase, str, str]:
    observation = outcome.observation
    if outcome.waiting is not None:
        return (
            Phase.QUEUED,
            "WaitingForCapacity",
            f"Waiting for a free build slot, position {outcome.waiting.position}: {outcome.waiting_reason}.",
        )
    if outcome.retry_at is not None:
        failure = f"{observation.reason}: {observation.message}" if observation.reason else "it failed"
        attempts = f"Attempt {outcome.attempt} of {outcome.max_attempts}"
        return (
            Phase.PENDING,
            "RetryScheduled",
            f"{attempts} failed ({failure}); the next one starts at {outcome.retry_at}.",
        )
    if observation.state == BuildState.SUCCEEDED:
        return Phase.BUILDING, "VerifyingPush", "Reading the pushed image from the registry."
    return _IN_PROGRESS.get(observation.state, _IN_PROGRESS[BuildState.RUNNING])


def _in_progress_status(previous: ServiceBuildStatus, outcome: Outcome, now: str) -> ServiceBuildStatus:
    observation = outcome.observation
    phase, reason, message = _in_progress(outcome)
    return ServiceBuildStatus(
        observed_generation=outcome.generation,
        phase=phase,
        conditions=_conditions(
            _Stamp(previous, outcome.generation, now),
            ready=("False", reason, message),
            reconciling=("True", reason, message),
            stalled=("False", reason, ""),
        )
        + _kept_cache_condition(previous),
        message=message,
        job_name=observation.job_name,
        start_time=observation.start_time,
        output=previous.output,
        cache=previous.cache,
        source=outcome.source,
        queue=outcome.waiting,
        attempt=_attempt(outcome),
    )


def decide(previous: ServiceBuildStatus, outcome: Outcome, now: str) -> ServiceBuildStatus:
    """The whole new status; timestamps of conditions move only when they flip."""
    state = outcome.observation.state
    if outcome.invalid_spec is not None or (state == BuildState.FAILED and outcome.retry_at is None):
        return _stalled_status(previous, outcome, now)
    if state == BuildState.SUCCEEDED and outcome.output is not None:
        return _succeeded_status(previous, outcome, now)
    return _in_progress_status(previous, outcome, now)


def transition_event(previous: ServiceBuildStatus, current: ServiceBuildStatus) -> Event | None:
    """The Event announcing a change of phase or of the Ready reason; None when nothing moved."""
    old_ready, new_ready = previous.condition(READY), current.condition(READY)
    if new_ready is None:
        return None
    same_generation = previous.observed_generation == current.observed_generation
    if (
        same_generation
        and old_ready is not None
        and (old_ready.reason, previous.phase)
        == (
            new_ready.reason,
            current.phase,
        )
    ):
        return None
    warning = current.condition(STALLED)
    event_type = "Warning" if warning is not None and warning.status == "True" else "Normal"
    return Event(type=event_type, reason=new_ready.reason, message=current.message or new_ready.message)


_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_size(size_bytes: int) -> str:
    """`12582912` → `12.0 MiB`."""
    size = float(size_bytes)
    for unit in _SIZE_UNITS:
        if size < 1024 or unit == _SIZE_UNITS[-1]:
            return f"{size_bytes} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError  # pragma: no cover


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The RFC 7386 merge patch turning `old` into `new` (None removes a key; lists are replaced)."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before:
            patch[key] = value
    return patch
