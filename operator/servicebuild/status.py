"""Decide the whole status of a ServiceBuild from what was observed; pure (the clock is passed in)."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from servicebuild.api.models import (
    AttestationOutput,
    AttestationType,
    BaseImage,
    BuildOutput,
    BuildRecord,
    BuildResult,
    CacheInputs,
    CacheStats,
    Condition,
    ConditionStatus,
    Finding,
    FirstMiss,
    LayerOutput,
    Phase,
    PlatformOutput,
    Provenance,
    ProvenanceRecorded,
    QueueStatus,
    ServiceBuildStatus,
    SourceStatus,
    Trigger,
)
from servicebuild.failures import Failure, Reason
from servicebuild.findings import DOCKERFILE_CLEAN, clean_condition
from servicebuild.imagehistory import LayerBreakdown
from servicebuild.imageref import ImageRef
from servicebuild.manifests import ImageSummary
from servicebuild.report import BuildReport
from servicebuild.times import format_time

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
DEFAULT_HISTORY = 10
_ENDED = frozenset({Phase.SUCCEEDED, Phase.FAILED})
CACHE_EXPORTED = "CacheExported"
"""A warning condition of the last successful build: False when its registry cache export failed."""
ConditionValue = tuple[ConditionStatus, str, str]
"""A condition's status, reason and message."""
WITHIN_SIZE_BUDGET = "WithinSizeBudget"
"""A warning condition of the last finished build with a `spec.sizeBudget`: False when an image was over."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the ServiceBuild, one per transition."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Build:
    """The build an outcome is about."""

    generation: int
    source: SourceStatus | None = None
    """What it builds: the resolved commit or the ConfigMap's digest."""
    attempt: int = 1
    """Which attempt at this build (retries follow transient failures)."""
    job_name: str | None = None
    start_time: datetime | None = None
    number: int | None = None
    """The build's number; None for an outcome that is no build (an invalid spec, a missing ConfigMap)."""
    trigger: Trigger | None = None
    request: str | None = None
    """The `requested-at` annotation's value this build handles, if any."""
    findings: tuple[Finding, ...] | None = None
    """What its Dockerfile gets wrong, when this outcome decided it; None keeps the status's findings."""


class Progress(Enum):
    """How far a build that has not ended has come: (phase, reason, message)."""

    JOB_CREATING = (Phase.PENDING, "JobCreating", "Creating the build Job.")
    AWAITING_ADMISSION = (Phase.PENDING, "BuildQueued", "The build Job is suspended, waiting for admission.")
    POD_PENDING = (Phase.PENDING, "BuildPending", "The build Job is waiting for its Pod to start.")
    RUNNING = (Phase.BUILDING, "BuildRunning", "BuildKit is building and pushing the image.")
    VERIFYING_PUSH = (Phase.BUILDING, "VerifyingPush", "Reading the pushed image from the registry.")
    WAITING_FOR_BUILDER = (Phase.PENDING, "WaitingForBuilder", "Waiting for the builder pool.")


@dataclass(frozen=True)
class InProgress:
    """The build runs, or its Job is on its way."""

    build: Build
    progress: Progress
    detail: str | None = None
    """Said instead of the progress's own message (why the build waits for its builder pool)."""


@dataclass(frozen=True)
class Queued:
    """The build waits for a free build slot; no Job exists yet."""

    build: Build
    position: int
    since: datetime
    why: str
    until: datetime | None = None
    """When it may start at the earliest, when known (the next wave of triggered builds)."""


@dataclass(frozen=True)
class RetryScheduled:
    """An attempt failed transiently; the next one starts at `retry_at`."""

    build: Build
    failure: Failure
    retry_at: datetime
    max_attempts: int


@dataclass(frozen=True)
class Succeeded:
    """The build pushed its image and the registry served it back as `output`."""

    build: Build
    output: BuildOutput
    report: BuildReport
    completion_time: datetime | None
    base_images: tuple[BaseImage, ...] = ()
    """The base images the build's stages used, as BuildKit resolved them."""
    first_miss: FirstMiss | None = None
    """The first step the cache missed, and why where knowable."""
    cache_inputs: CacheInputs | None = None
    """What the build read, for the next build's `first_miss` to compare with."""
    size_budget: ConditionValue | None = None
    """`WithinSizeBudget` as its images measured against `spec.sizeBudget`; None without a budget."""


@dataclass(frozen=True)
class Stalled:
    """Nothing will change until the spec (or what it names) does: an invalid spec, a problem found before
    any Job, a failed build, or a transient failure with no attempts left."""

    build: Build
    failure: Failure
    log_tail: str | None = None
    completion_time: datetime | None = None
    max_attempts: int = 1


Outcome = InProgress | Queued | RetryScheduled | Succeeded | Stalled
"""What one reconcile found, as exactly one of the states a build can be in."""


def _seconds_between(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, round((end - start).total_seconds()))


class _HasConditions(Protocol):
    def condition(self, condition_type: str, /) -> Condition | None: ...


@dataclass(frozen=True)
class _Stamp:
    """What every condition of one decision shares (of a ServiceBuild's status, or a BuilderPool's)."""

    previous: _HasConditions
    generation: int
    now: datetime

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

    def standard(
        self, *, ready: ConditionValue, reconciling: ConditionValue, stalled: ConditionValue
    ) -> list[Condition]:
        return [
            self.condition(condition_type, value)
            for condition_type, value in ((READY, ready), (RECONCILING, reconciling), (STALLED, stalled))
        ]


def _kept_cache_condition(previous: ServiceBuildStatus) -> list[Condition]:
    """CacheExported describes the last successful build: it stays until the next one decides it."""
    kept = previous.condition(CACHE_EXPORTED)
    return [kept] if kept is not None else []


def _budget_condition(stamp: _Stamp, value: ConditionValue | None) -> list[Condition]:
    """WithinSizeBudget as a finished build decided it, else kept as it was."""
    if value is not None:
        return [stamp.condition(WITHIN_SIZE_BUDGET, value)]
    kept = stamp.previous.condition(WITHIN_SIZE_BUDGET)
    return [kept] if kept is not None else []


def _dockerfile_condition(stamp: _Stamp, build: Build) -> list[Condition]:
    """DockerfileClean sums up the findings: decided with them, else kept as it was."""
    if build.findings is not None:
        return [stamp.condition(DOCKERFILE_CLEAN, clean_condition(build.findings))]
    kept = stamp.previous.condition(DOCKERFILE_CLEAN)
    return [kept] if kept is not None else []


def _cache_export(report: BuildReport) -> ConditionValue | None:
    """True or False as the build reported it; None (no condition) when it had no cache to export."""
    if report.cache_exported is None:
        return None
    if report.cache_exported:
        return ("True", "CacheExported", "The build cache was exported to the registry.")
    return (
        "False",
        "CacheExportFailed",
        (
            "The image was pushed but its build cache was not exported, so the next build may run cold:"
            " check that the push credentials may write spec.cache.ref, and that a registry served over"
            " plain HTTP is listed in the operator's SERVICEBUILD_INSECURE_REGISTRIES."
        ),
    )


def _attempt(build: Build) -> int | None:
    """Shown from the second attempt on; the first is the normal case."""
    return build.attempt if build.attempt > 1 else None


def _base(previous: ServiceBuildStatus, build: Build) -> dict[str, Any]:
    """The fields every status shares: the build's bookkeeping, and the last success kept."""
    return {
        "observed_generation": build.generation,
        "job_name": build.job_name,
        "start_time": build.start_time,
        "output": previous.output,
        "cache": previous.cache,
        "source": build.source,
        "attempt": _attempt(build),
        "build": build.number if build.number is not None else previous.build,
        "trigger": build.trigger if build.number is not None else previous.trigger,
        "last_handled_request": build.request if build.request is not None else previous.last_handled_request,
        "base_images": previous.base_images,
        "findings": previous.findings if build.findings is None else list(build.findings) or None,
    }


def _stalled(previous: ServiceBuildStatus, outcome: Stalled, now: datetime) -> ServiceBuildStatus:
    build, failure = outcome.build, outcome.failure
    reason = failure.reason
    message = failure.message
    if build.attempt > 1:
        message = f"Attempt {build.attempt} of {outcome.max_attempts}: {message}"
    hint = f" Logs: kubectl logs job/{build.job_name} -c buildkit." if build.job_name else ""
    detail = f"{message}\n{outcome.log_tail}" if outcome.log_tail else message
    stamp = _Stamp(previous, build.generation, now)
    over_budget: ConditionValue | None = (
        ("False", reason, message) if reason == Reason.SIZE_BUDGET_EXCEEDED else None
    )
    return ServiceBuildStatus(
        **_base(previous, build),
        phase=Phase.FAILED,
        conditions=stamp.standard(
            ready=("False", reason, message),
            reconciling=("False", reason, "Nothing will change until the spec does."),
            stalled=("True", reason, detail),
        )
        + _kept_cache_condition(previous)
        + _dockerfile_condition(stamp, build)
        + _budget_condition(stamp, over_budget),
        message=message + hint,
        completion_time=outcome.completion_time,
        duration_seconds=_seconds_between(build.start_time, outcome.completion_time),
        failed_step=failure.failed_step,
        log_tail=outcome.log_tail,
    )


def _succeeded(previous: ServiceBuildStatus, outcome: Succeeded, now: datetime) -> ServiceBuildStatus:
    build, output, report = outcome.build, outcome.output, outcome.report
    message = f"Pushed {output.image} ({output.size})"
    cache_export = _cache_export(report)
    if cache_export is not None and cache_export[0] == "False":
        message += "; the cache export failed"
    stamp = _Stamp(previous, build.generation, now)
    cache = previous.cache
    if report.cached_steps is not None and report.total_steps is not None:
        cache = CacheStats(
            cached_steps=report.cached_steps,
            total_steps=report.total_steps,
            first_miss=outcome.first_miss,
            inputs=outcome.cache_inputs,
        )
    return ServiceBuildStatus(
        **_base(previous, build)
        | {"output": output, "cache": cache, "base_images": list(outcome.base_images) or None},
        phase=Phase.SUCCEEDED,
        conditions=stamp.standard(
            ready=("True", "BuildSucceeded", message),
            reconciling=("False", "BuildSucceeded", "The image of this generation is built and pushed."),
            stalled=("False", "BuildSucceeded", ""),
        )
        + ([] if cache_export is None else [stamp.condition(CACHE_EXPORTED, cache_export)])
        + _dockerfile_condition(stamp, build)
        + ([] if outcome.size_budget is None else [stamp.condition(WITHIN_SIZE_BUDGET, outcome.size_budget)]),
        message=message,
        completion_time=outcome.completion_time,
        duration_seconds=_seconds_between(build.start_time, outcome.completion_time),
    )


def _progress(outcome: InProgress | Queued | RetryScheduled) -> tuple[Phase, str, str]:
    match outcome:
        case Queued(position=position, why=why):
            return (
                Phase.QUEUED,
                "WaitingForCapacity",
                f"Waiting for a free build slot, position {position}: {why}.",
            )
        case RetryScheduled(build=build, failure=failure, retry_at=retry_at, max_attempts=max_attempts):
            return (
                Phase.PENDING,
                "RetryScheduled",
                (
                    f"Attempt {build.attempt} of {max_attempts} failed ({failure.reason}: {failure.message});"
                    f" the next one starts at {format_time(retry_at)}."
                ),
            )
        case InProgress(progress=progress, detail=str() as detail):
            phase, reason, _ = progress.value
            return phase, reason, detail
        case InProgress(progress=progress):
            return progress.value


def _in_progress(
    previous: ServiceBuildStatus, outcome: InProgress | Queued | RetryScheduled, now: datetime
) -> ServiceBuildStatus:
    phase, reason, message = _progress(outcome)
    queue = (
        QueueStatus(position=outcome.position, since=outcome.since) if isinstance(outcome, Queued) else None
    )
    stamp = _Stamp(previous, outcome.build.generation, now)
    return ServiceBuildStatus(
        **_base(previous, outcome.build),
        phase=phase,
        conditions=stamp.standard(
            ready=("False", reason, message),
            reconciling=("True", reason, message),
            stalled=("False", reason, ""),
        )
        + _kept_cache_condition(previous)
        + _dockerfile_condition(stamp, outcome.build)
        + _budget_condition(stamp, None),
        message=message,
        queue=queue,
    )


def decide(
    previous: ServiceBuildStatus, outcome: Outcome, now: datetime, history_limit: int = DEFAULT_HISTORY
) -> ServiceBuildStatus:
    """The whole new status; timestamps of conditions move only when they flip."""
    match outcome:
        case Stalled():
            status = _stalled(previous, outcome, now)
        case Succeeded():
            status = _succeeded(previous, outcome, now)
        case _:
            status = _in_progress(previous, outcome, now)
    history = _history(previous, outcome, status, now)[:history_limit]
    return status.model_copy(update={"history": history or None})


def _history(
    previous: ServiceBuildStatus, outcome: Outcome, status: ServiceBuildStatus, now: datetime
) -> list[BuildRecord]:
    """The finished builds, newest first: a build superseded before it ended, and this one once it ended."""
    records = list(previous.history or ())
    number = outcome.build.number
    if previous.build is not None and number not in (None, previous.build) and previous.phase not in _ENDED:
        records.insert(0, _record(previous, BuildResult.SUPERSEDED, completion_time=now))
    if number is not None and isinstance(outcome, Succeeded | Stalled):
        result = BuildResult.SUCCEEDED if isinstance(outcome, Succeeded) else BuildResult.FAILED
        record = _record(status, result, completion_time=status.completion_time)
        records = [record, *(other for other in records if other.build != number)]
    return records


def _record(status: ServiceBuildStatus, result: BuildResult, completion_time: datetime | None) -> BuildRecord:
    """The build a status describes, as its history records it."""
    source = status.source or SourceStatus()
    succeeded = result == BuildResult.SUCCEEDED and status.output is not None
    stalled = status.condition(STALLED)
    return BuildRecord(
        build=status.build or 1,
        trigger=status.trigger or Trigger.CREATED,
        generation=status.observed_generation or 1,
        commit=source.commit,
        context_digest=source.context_digest,
        start_time=status.start_time,
        completion_time=completion_time,
        duration_seconds=_seconds_between(status.start_time, completion_time),
        result=result,
        reason=stalled.reason if result == BuildResult.FAILED and stalled is not None else None,
        digest=status.output.digest if succeeded and status.output else None,
        size_bytes=status.output.size_bytes if succeeded and status.output else None,
        cached_steps=status.cache.cached_steps if succeeded and status.cache else None,
        job_name=status.job_name,
    )


def transition_event(previous: ServiceBuildStatus, current: ServiceBuildStatus) -> Event | None:
    """The Event announcing a change of phase or of the Ready reason; None when nothing moved."""
    old_ready, new_ready = previous.condition(READY), current.condition(READY)
    if new_ready is None:
        return None
    same_generation = previous.observed_generation == current.observed_generation
    if (
        same_generation
        and old_ready is not None
        and (old_ready.reason, previous.phase) == (new_ready.reason, current.phase)
    ):
        return None
    warning = current.condition(STALLED)
    event_type = "Warning" if warning is not None and warning.status == "True" else "Normal"
    return Event(type=event_type, reason=new_ready.reason, message=current.message or new_ready.message)


def budget_event(previous: ServiceBuildStatus, current: ServiceBuildStatus) -> Event | None:
    """The Warning Event of a build that succeeded over a `Warn` size budget, once per build; a `Fail`
    budget's stall has its transition Event."""
    over = current.condition(WITHIN_SIZE_BUDGET)
    if current.phase != Phase.SUCCEEDED or over is None or over.status != "False":
        return None
    if previous.phase == Phase.SUCCEEDED and previous.build == current.build:
        return None
    return Event(type="Warning", reason=over.reason, message=over.message)


def output_record(  # noqa: PLR0913 - what the registry serves, and what the build reported and asked for
    image: ImageRef,
    summary: ImageSummary,
    report: BuildReport,
    generation: int,
    *,
    layers: Mapping[str, LayerBreakdown] | None = None,
    provenance: str | None = None,
) -> BuildOutput:
    """The image as the registry serves it, pinned by digest, with every reference the build pushed, where
    its bytes are (`layers`, by image manifest digest, where they were read) and the attestations served
    with it. `provenance` is the mode the build asked for; what the registry serves decides whether the
    image has any."""
    layers = layers or {}
    platforms = [
        PlatformOutput(
            platform=p.platform,
            digest=p.digest,
            size_bytes=p.size_bytes,
            layers=p.layers,
            **_layer_bytes(layers.get(p.digest)),
        )
        for p in summary.platforms
    ]
    attestations = [
        AttestationOutput(
            type=AttestationType(a.kind), digest=a.digest, subject=a.subject, platform=a.platform
        )
        for a in summary.attestations
    ]
    attested = any(a.type == AttestationType.PROVENANCE for a in attestations)
    one_image = summary.digest if not platforms else platforms[0].digest if len(platforms) == 1 else None
    return BuildOutput(
        **_layer_bytes(layers.get(one_image) if one_image else None),
        image=image.with_digest(summary.digest),
        digest=summary.digest,
        size_bytes=summary.size_bytes,
        size=human_size(summary.size_bytes),
        layers=summary.layers,
        generation=generation,
        platforms=platforms or None,
        tags=report.image_name.split(",") if report.image_name else [str(image)],
        provenance=_recorded_provenance(provenance) if attested else "none",
        attestations=attestations or None,
    )


def _recorded_provenance(asked: str | None) -> ProvenanceRecorded:
    """The mode a served provenance was made in: as asked; `min`, BuildKit's default, when unknown."""
    return "max" if asked == Provenance.MAX else "min"


def _layer_bytes(layers: LayerBreakdown | None) -> dict[str, Any]:
    if layers is None:
        return {}
    return {
        "base_bytes": layers.base_bytes,
        "added_bytes": layers.added_bytes,
        "largest_layers": [
            LayerOutput(size_bytes=layer.size_bytes, instruction=layer.instruction)
            for layer in layers.largest
        ],
    }


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
