"""What is due for a ServiceBuild: which build, and its next step given what its Job says; pure.

The reconciler observes, asks here, and does what the answer says. A build is one generation of the
spec with one source (the ConfigMap's digest); each attempt at it has its own Job.
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from servicebuild import naming
from servicebuild.api.models import (
    BaseImage,
    InvalidServiceBuild,
    ObjectMeta,
    Phase,
    ServiceBuild,
    ServiceBuildStatus,
    SourceStatus,
    Trigger,
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
class Wanted:
    """What the spec and its sources ask for now; None where the operator does not follow a source."""

    generation: int
    context_digest: str | None = None
    """The ConfigMap's content digest (ConfigMap sources)."""
    commit: str | None = None
    """The newest commit of a polled revision; None without polling (the revision resolves at start)."""
    base_images: tuple[BaseImage, ...] | None = None
    """The digests the last build's base images have now (with `triggers.baseImages`)."""
    request: str | None = None
    """The `servicebuild.dev/requested-at` annotation."""
    next_poll: datetime | None = None
    """When to look at the polled revision again."""


@dataclass(frozen=True)
class DueBuild:
    """The build the spec and its sources ask for, at its current attempt."""

    number: int
    trigger: Trigger
    generation: int
    context_digest: str | None
    commit: str | None
    """The commit to build, when polling resolved it; None: resolve it when the Job is created."""
    request: str | None
    attempt: int
    job_name: str
    since: datetime
    """Since when it waits for a build slot (first come, first served)."""
    others_stopped: bool
    """An earlier reconcile of this same build already stopped the Jobs of other builds (it wrote the
    status only after that), so they need no listing again."""

    @property
    def build(self) -> Build:
        source = SourceStatus(context_digest=self.context_digest) if self.context_digest else None
        return Build(
            self.generation,
            source,
            self.attempt,
            number=self.number,
            trigger=self.trigger,
            request=self.request,
        )


INTERRUPTING = frozenset({Trigger.CREATED, Trigger.SPEC_CHANGED, Trigger.SOURCE_CHANGED, Trigger.REQUESTED})
"""Changes that stop a running build for a new one; a new commit or base image waits for it to end."""
TRIGGERED = frozenset({Trigger.NEW_COMMIT, Trigger.BASE_IMAGE_CHANGED})
"""Builds nobody asked for: released in waves (`SERVICEBUILD_MAX_TRIGGERED_BUILDS_PER_MINUTE`)."""


def ended(previous: ServiceBuildStatus, generation: int) -> bool:
    """Whether the last build of this generation ended, successfully or not."""
    return previous.observed_generation == generation and previous.phase in _ENDED_PHASES


def change(previous: ServiceBuildStatus, wanted: Wanted) -> Trigger | None:
    """What differs between the current (or last) build and what is wanted now, the weightiest first;
    None when nothing does."""
    built = previous.source or SourceStatus()
    differences = [
        (previous.observed_generation is None, Trigger.CREATED),
        (previous.observed_generation != wanted.generation, Trigger.SPEC_CHANGED),
        (built.context_digest != wanted.context_digest, Trigger.SOURCE_CHANGED),
        (wanted.request not in (None, previous.last_handled_request), Trigger.REQUESTED),
        (wanted.commit not in (None, built.commit), Trigger.NEW_COMMIT),
        (
            wanted.base_images is not None and set(wanted.base_images) != set(previous.base_images or ()),
            Trigger.BASE_IMAGE_CHANGED,
        ),
    ]
    return next((trigger for differs, trigger in differences if differs), None)


def idle(servicebuild: ServiceBuild | InvalidServiceBuild, wanted: Wanted | None) -> bool:
    """Whether the resync may pass the object by: its generation's build ended and nothing it follows has
    changed since (`wanted` as the watches and caches last saw it; None for an invalid spec)."""
    if not ended(servicebuild.status, servicebuild.metadata.generation):
        return False
    return wanted is None or change(servicebuild.status, wanted) is None


def due_build(
    meta: ObjectMeta, previous: ServiceBuildStatus, wanted: Wanted, now: datetime
) -> DueBuild | None:
    """The build to follow or start; None when nothing is due (the last build ended and nothing changed)."""
    trigger = change(previous, wanted)
    has_ended = ended(previous, wanted.generation)
    current = previous.build or (0 if previous.observed_generation is None else 1)
    if trigger is None and has_ended:
        return None
    if trigger is None or (trigger not in INTERRUPTING and not has_ended):
        return _current_build(meta, previous, current, now)
    number = current + 1
    return DueBuild(
        number=number,
        trigger=trigger,
        generation=wanted.generation,
        context_digest=wanted.context_digest,
        commit=wanted.commit,
        request=wanted.request,
        attempt=1,
        job_name=naming.job_name(
            meta.name, meta.uid, number, naming.build_key(number, wanted.generation, wanted.context_digest, 1)
        ),
        since=now,
        others_stopped=False,
    )


def _current_build(meta: ObjectMeta, previous: ServiceBuildStatus, number: int, now: datetime) -> DueBuild:
    """The build the status describes, still running (or waiting to), at its current attempt."""
    built = previous.source or SourceStatus()
    generation = previous.observed_generation or meta.generation
    attempt = previous.attempt or 1
    started_before = previous.job_name is not None or previous.queue is not None
    return DueBuild(
        number=number,
        trigger=previous.trigger or Trigger.CREATED,
        generation=generation,
        context_digest=built.context_digest,
        commit=built.commit,
        request=previous.last_handled_request,
        attempt=attempt,
        # The name the Job was made with (by an older operator too); computed when the status has none.
        job_name=previous.job_name
        or naming.job_name(
            meta.name, meta.uid, number, naming.build_key(number, generation, built.context_digest, attempt)
        ),
        since=previous.queue.since if previous.queue else now,
        others_stopped=started_before,
    )


def next_attempt(meta: ObjectMeta, due: DueBuild, now: datetime) -> DueBuild:
    """The attempt after `due`, waiting for a slot from `now` on."""
    attempt = due.attempt + 1
    key = naming.build_key(due.number, due.generation, due.context_digest, attempt)
    job_name = naming.job_name(meta.name, meta.uid, due.number, key)
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
