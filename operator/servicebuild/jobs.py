"""Small typed views of a build Job and its Pod, parsed once from what the API returned; pure and total
(a field missing or of the wrong type reads as absent, never as an exception)."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from servicebuild.naming import (
    ANNOTATION_BUILD,
    ANNOTATION_COMMIT,
    ANNOTATION_CONTEXT_DIGEST,
    ANNOTATION_PROVENANCE,
    ANNOTATION_SBOM_SCANNER,
    ANNOTATION_SERVICEBUILD,
)
from servicebuild.times import parse_time

FAILED_CONDITIONS = ("Failed", "FailureTarget")
"""Since Kubernetes 1.31 the Job controller sets `FailureTarget` (or `SuccessCriteriaMet`) as soon as the
Job's fate is decided and adds `Failed` (or `Complete`) only once its Pods have terminated."""
SUCCEEDED_CONDITIONS = ("Complete", "SuccessCriteriaMet")


@dataclass(frozen=True)
class Condition:
    """A true condition of a Job or Pod."""

    type: str
    reason: str = ""
    message: str = ""
    time: datetime | None = None


@dataclass(frozen=True)
class BuildJob:
    """What the operator reads of a build Job."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    servicebuild: str | None
    """The owning ServiceBuild's name, from the Job's annotation."""
    build: int
    """The build's number, from the Job's annotation; 0 for a Job of an operator that numbered none."""
    commit: str | None
    context_digest: str | None
    created: datetime | None
    start_time: datetime | None
    completion_time: datetime | None
    active: int
    suspended: bool
    conditions: tuple[Condition, ...]
    pods_succeeded: int = 0
    """Pods that ended well, counted (`status.succeeded`) or not yet (`uncountedTerminatedPods`)."""
    pods_failed: int = 0
    provenance: str | None = None
    """The provenance mode the build asked for; None on Jobs of operators without attestations."""
    sbom_scanner: str | None = None
    """The SBOM scanner image the build pulls, when it makes an SBOM."""

    def condition(self, *types: str) -> Condition | None:
        """The first true condition of these types, in the order given."""
        return next((c for wanted in types for c in self.conditions if c.type == wanted), None)

    @property
    def failed(self) -> Condition | None:
        return self.condition(*FAILED_CONDITIONS)

    @property
    def succeeded(self) -> Condition | None:
        return self.condition(*SUCCEEDED_CONDITIONS)

    @property
    def ended_well(self) -> bool | None:
        """Whether the build ended well; None while it runs. The Job controller records an ended Pod
        (`uncountedTerminatedPods`, then the counters) before it finishes the Job."""
        if self.failed is not None or (self.pods_failed and not self.pods_succeeded):
            return False
        if self.succeeded is not None or self.pods_succeeded:
            return True
        return None

    @property
    def finished(self) -> bool:
        """Whether the build no longer runs (so it can push nothing more, and holds no build slot).

        True with a finishing condition, and also before it: the Job controller counts an ended Pod out
        of `status.active` at once but adds the condition only seconds later. A started Job that is
        neither suspended nor active has no Pod running: with `backoffLimit: 0` it never makes another.
        """
        if self.failed is not None or self.succeeded is not None:
            return True
        return self.start_time is not None and not self.active and not self.suspended


ContainerState = Literal["waiting", "running", "terminated", "unknown"]


@dataclass(frozen=True)
class Container:
    """One container's status, and the memory limit its spec gives it."""

    name: str
    state: ContainerState
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    finished_at: datetime | None = None
    memory_limit: str | None = None


@dataclass(frozen=True)
class BuildPod:
    """What the operator reads of a build Job's Pod."""

    name: str
    phase: str
    reason: str
    message: str
    conditions: tuple[Condition, ...]
    """True conditions, plus `PodScheduled` when it is False (that is the news: why it is not scheduled)."""
    init_containers: tuple[Container, ...]
    containers: tuple[Container, ...]

    def container(self, name: str) -> Container | None:
        return next((c for c in self.containers if c.name == name), None)

    def condition(self, condition_type: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == condition_type), None)


def parse_job(raw: object) -> BuildJob:
    job = _mapping(raw)
    metadata, spec, status = (
        _mapping(job.get("metadata")),
        _mapping(job.get("spec")),
        _mapping(job.get("status")),
    )
    annotations = _mapping(metadata.get("annotations"))
    return BuildJob(
        name=_text(metadata.get("name")),
        namespace=_text(metadata.get("namespace")),
        labels={str(key): str(value) for key, value in _mapping(metadata.get("labels")).items()},
        servicebuild=_optional_text(annotations.get(ANNOTATION_SERVICEBUILD)),
        build=int(number) if (number := _text(annotations.get(ANNOTATION_BUILD))).isdigit() else 0,
        commit=_optional_text(annotations.get(ANNOTATION_COMMIT)),
        context_digest=_optional_text(annotations.get(ANNOTATION_CONTEXT_DIGEST)),
        created=parse_time(metadata.get("creationTimestamp")),
        start_time=parse_time(status.get("startTime")),
        completion_time=parse_time(status.get("completionTime")),
        active=_count(status.get("active")),
        suspended=spec.get("suspend") is True,
        conditions=_true_conditions(status.get("conditions"), "lastTransitionTime"),
        pods_succeeded=_count(status.get("succeeded")) + _uncounted(status, "succeeded"),
        pods_failed=_count(status.get("failed")) + _uncounted(status, "failed"),
        provenance=_optional_text(annotations.get(ANNOTATION_PROVENANCE)),
        sbom_scanner=_optional_text(annotations.get(ANNOTATION_SBOM_SCANNER)),
    )


def _uncounted(status: Mapping[str, Any], kind: str) -> int:
    pods = _mapping(status.get("uncountedTerminatedPods")).get(kind)
    return len(pods) if isinstance(pods, list) else 0


def parse_pod(raw: object) -> BuildPod | None:
    """None when there is no Pod."""
    if raw is None:
        return None
    pod = _mapping(raw)
    spec, status = _mapping(pod.get("spec")), _mapping(pod.get("status"))
    limits = {
        _text(container.get("name")): _optional_text(
            _mapping(_mapping(container.get("resources")).get("limits")).get("memory")
        )
        for container in [*_items(spec.get("initContainers")), *_items(spec.get("containers"))]
    }
    conditions = _true_conditions(status.get("conditions"), "lastTransitionTime")
    unscheduled = [
        Condition(
            type="PodScheduled",
            reason=_text(condition.get("reason")),
            message=_text(condition.get("message")),
        )
        for condition in _items(status.get("conditions"))
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False"
    ]
    return BuildPod(
        name=_text(_mapping(pod.get("metadata")).get("name")),
        phase=_text(status.get("phase")),
        reason=_text(status.get("reason")),
        message=_text(status.get("message")),
        conditions=(*conditions, *unscheduled),
        init_containers=_containers(status.get("initContainerStatuses"), limits),
        containers=_containers(status.get("containerStatuses"), limits),
    )


def _containers(statuses: object, limits: Mapping[str, str | None]) -> tuple[Container, ...]:
    containers = []
    for status in _items(statuses):
        name = _text(status.get("name"))
        states = _mapping(status.get("state"))
        kind: ContainerState = next(
            (
                state
                for state in ("terminated", "running", "waiting")
                if isinstance(states.get(state), Mapping)
            ),
            "unknown",
        )
        detail = _mapping(states.get(kind))
        exit_code = detail.get("exitCode")
        containers.append(
            Container(
                name=name,
                state=kind,
                reason=_text(detail.get("reason")),
                message=_text(detail.get("message")),
                exit_code=exit_code
                if isinstance(exit_code, int) and not isinstance(exit_code, bool)
                else None,
                finished_at=parse_time(detail.get("finishedAt")),
                memory_limit=limits.get(name),
            )
        )
    return tuple(containers)


def _true_conditions(conditions: object, time_key: str) -> tuple[Condition, ...]:
    return tuple(
        Condition(
            type=_text(condition.get("type")),
            reason=_text(condition.get("reason")),
            message=_text(condition.get("message")),
            time=parse_time(condition.get(time_key)),
        )
        for condition in _items(conditions)
        if condition.get("status") == "True"
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> Iterable[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
