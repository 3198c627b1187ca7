"""What is due for a ServiceBuild: which build, and its next step given what its Job says; pure.

The reconciler observes, asks here, and does what the answer says. A build is one generation of the
spec with one source (the ConfigMap's digest); each attempt at it has its own Job.
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from servicebuild import naming
from servicebuild.api.models import (
    InvalidServiceBuild,
    ObjectMeta,
    Phase,
    ServiceBuild,
    ServiceBuildStatus,
    SourceStatus,
)
from servicebuild.config import Settings
from servicebuild.failures import Reason
from servicebuild.observe import BuildState, Observation
from servicebuild.status import Build, InProgress, Outcome, Progress, RetryScheduled, Stalled

MAX_RETRY_DELAY = timedelta(minutes=10)
_ENDED_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})
_PROGRESS = {
    BuildState.QUEUED: Progress.AWAITING_ADMISSION,
    BuildState.PENDING: Progress.POD_PENDING,
    BuildState.RUNNING: Progress.RUNNING,
}


@dataclass(frozen=True)
class DueBuild:
    """The build the spec and its source ask for, at its current attempt."""

    generation: int
    context_digest: str | None
    attempt: int
    job_name: str
    since: datetime
    """Since when it waits for a build slot (first come, first served)."""
    others_stopped: bool
    """An earlier reconcile of this same build already stopped the Jobs of other generations and
    sources (it wrote the status only after that), so they need no listing again."""

    @property
    def build(self) -> Build:
        source = SourceStatus(context_digest=self.context_digest) if self.context_digest else None
        return Build(self.generation, source, self.attempt)


def ended(previous: ServiceBuildStatus, generation: int) -> bool:
    """Whether the last build of this generation ended, successfully or not."""
    return previous.observed_generation == generation and previous.phase in _ENDED_PHASES


def settled(previous: ServiceBuildStatus, generation: int, context_digest: str | None) -> bool:
    """Whether the build of this generation and source already ended: nothing is due."""
    built_digest = previous.source.context_digest if previous.source else None
    return ended(previous, generation) and built_digest == context_digest


def idle(servicebuild: ServiceBuild | InvalidServiceBuild, context_digest: str | None) -> bool:
    """Whether the resync may pass the object by: its generation's build ended and its source is the one
    that build had (`context_digest` as the ConfigMap watch last saw it; None without a ConfigMap)."""
    previous = servicebuild.status
    if not ended(previous, servicebuild.metadata.generation):
        return False
    built_digest = previous.source.context_digest if previous.source else None
    return isinstance(servicebuild, InvalidServiceBuild) or built_digest == context_digest


def due_build(
    meta: ObjectMeta, previous: ServiceBuildStatus, context_digest: str | None, now: datetime
) -> DueBuild | None:
    """The build to follow or start; None when it already ended (nothing to do)."""
    if settled(previous, meta.generation, context_digest):
        return None
    built_digest = previous.source.context_digest if previous.source else None
    same_build = previous.observed_generation == meta.generation and built_digest == context_digest
    attempt = (previous.attempt or 1) if same_build else 1
    started_before = previous.job_name is not None or previous.queue is not None
    return DueBuild(
        generation=meta.generation,
        context_digest=context_digest,
        attempt=attempt,
        job_name=naming.job_name(meta.name, meta.uid, meta.generation, context_digest, attempt),
        since=previous.queue.since if same_build and previous.queue else now,
        others_stopped=same_build and started_before,
    )


def next_attempt(meta: ObjectMeta, due: DueBuild, now: datetime) -> DueBuild:
    """The attempt after `due`, waiting for a slot from `now` on."""
    attempt = due.attempt + 1
    job_name = naming.job_name(meta.name, meta.uid, due.generation, due.context_digest, attempt)
    return replace(due, attempt=attempt, job_name=job_name, since=now)


@dataclass(frozen=True)
class StartJob:
    """No Job exists for the due build: check what it needs and create it (when a slot is free)."""


@dataclass(frozen=True)
class StartNextAttempt:
    """The attempt failed transiently and its retry delay has passed."""


@dataclass(frozen=True)
class ReadBack:
    """The build pushed its image: confirm it in the registry and measure it."""


@dataclass(frozen=True)
class Report:
    """Nothing to do but report `outcome`; `stop_job` when its Job must go (a Pod that never started
    holds its quota and would start late and unexpected)."""

    outcome: Outcome
    stop_job: bool = False


Step = StartJob | StartNextAttempt | ReadBack | Report


def observed_build(due: DueBuild, observation: Observation) -> Build:
    """The build as its Job describes it: what the Job builds, and when it started."""
    build = due.build
    if observation.commit is not None or observation.context_digest is not None:
        build = replace(
            build, source=SourceStatus(commit=observation.commit, context_digest=observation.context_digest)
        )
    return replace(build, job_name=observation.job_name, start_time=observation.start_time)


def next_step(due: DueBuild, observation: Observation, settings: Settings, now: datetime) -> Step:
    """What to do about the due build, given what its Job (and Pod) say now."""
    build = observed_build(due, observation)
    match observation.state:
        case BuildState.ABSENT:
            return StartJob()
        case BuildState.SUCCEEDED:
            return ReadBack()
        case BuildState.FAILED:
            return _after_failure(build, observation, settings, now)
        case state:
            return Report(InProgress(build, _PROGRESS[state]))


def _after_failure(build: Build, observation: Observation, settings: Settings, now: datetime) -> Step:
    failure = observation.failure
    if failure is None:  # observe() gives every failed build its reason
        raise ValueError("a failed observation needs its failure")
    max_attempts = settings.max_build_attempts
    stalled = Stalled(build, failure, observation.log_tail, observation.completion_time, max_attempts)
    if failure.reason == Reason.PENDING_TIMEOUT:
        return Report(stalled, stop_job=True)
    if not failure.transient or build.attempt >= max_attempts:
        return Report(stalled)
    retry_at = (observation.completion_time or now) + retry_delay(build.attempt, settings)
    if now < retry_at:
        return Report(RetryScheduled(build, failure, retry_at, max_attempts))
    return StartNextAttempt()


def retry_delay(attempt: int, settings: Settings) -> timedelta:
    """The wait after a transient failure of `attempt`: the setting, doubling with each attempt."""
    return min(timedelta(seconds=settings.retry_delay_seconds * 2 ** (attempt - 1)), MAX_RETRY_DELAY)
