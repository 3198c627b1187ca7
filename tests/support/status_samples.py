"""ServiceBuilds as the API server returns them, each status made by the operator's own status builder
(`status.decide`, `status.output_record`) for one outcome: what kubectl's columns and GitOps health
checks read."""

from datetime import UTC, datetime, timedelta
from typing import Any

from servicebuild.api.models import ServiceBuildStatus, SourceStatus, Trigger, status_to_dict
from servicebuild.failures import Failure
from servicebuild.imageref import parse_image
from servicebuild.manifests import ImageSummary
from servicebuild.report import BuildReport
from servicebuild.status import (
    Build,
    InProgress,
    Outcome,
    Progress,
    Queued,
    RetryScheduled,
    Stalled,
    Succeeded,
    decide,
    output_record,
)
from servicebuild.times import format_time

CREATED = datetime(2026, 11, 28, 9, 0, 0, tzinfo=UTC)
STARTED = CREATED + timedelta(minutes=10)
ENDED = STARTED + timedelta(seconds=83)
COMMIT = "3f9c2a7be81d4c0f9a6e5d2b1c0a9f8e7d6c5b4a"
DIGEST = "sha256:" + "5d0c" * 16
IMAGE = "registry.example.com/shop/checkout:1.4.2"
REPORT = BuildReport(digest=DIGEST, image_name=IMAGE, cached_steps=4, total_steps=5, cache_exported=True)
BUILD_FAILED = Failure("BuildFailed", "Build failed at [build 3/4] RUN make.", "[build 3/4] RUN make")
EVICTED = Failure("Evicted", "The build Pod was evicted.")
SPEC = {
    "source": {"git": {"url": "https://git.example.com/shop/checkout.git", "revision": "main"}},
    "output": {"image": IMAGE},
}


def _build(generation: int, number: int) -> Build:
    return Build(
        generation,
        source=SourceStatus(commit=COMMIT),
        job_name=f"checkout-{number}-7f2c1",
        start_time=STARTED,
        number=number,
        trigger=Trigger.CREATED if number == 1 else Trigger.SPEC_CHANGED,
    )


def _succeeded(generation: int, number: int) -> Succeeded:
    summary = ImageSummary(DIGEST, "application/vnd.oci.image.manifest.v1+json", 12_937_420, 3, ())
    output = output_record(parse_image(IMAGE), summary, REPORT, generation)
    return Succeeded(_build(generation, number), output, REPORT, ENDED)


def _status(*outcomes: Outcome) -> ServiceBuildStatus:
    """The status after each outcome in turn, as the operator writes them one reconcile after another."""
    status = ServiceBuildStatus()
    for outcome in outcomes:
        status = decide(status, outcome, ENDED)
    return status


STATUSES: dict[str, ServiceBuildStatus] = {
    "succeeded": _status(InProgress(_build(1, 1), Progress.RUNNING), _succeeded(1, 1)),
    "failed for good": _status(
        _succeeded(1, 1),
        Stalled(_build(2, 2), BUILD_FAILED, log_tail="make: *** [all] Error 1", completion_time=ENDED),
    ),
    "running": _status(_succeeded(1, 1), InProgress(_build(2, 2), Progress.RUNNING)),
    "pending": _status(InProgress(_build(1, 1), Progress.POD_PENDING)),
    "queued": _status(Queued(_build(1, 1), position=3, since=CREATED, why="2 of 2 builds run")),
    "retry scheduled": _status(
        RetryScheduled(_build(1, 1), EVICTED, retry_at=ENDED + timedelta(seconds=30), max_attempts=3)
    ),
    "invalid spec": _status(Stalled(Build(1), Failure("InvalidSpec", "spec.output.image: not an image."))),
}
"""The status of each outcome a build can have; a failed or running build keeps the last success's output."""


def servicebuild(status: ServiceBuildStatus | None, generation: int | None = None) -> dict[str, Any]:
    """The object as `kubectl get -o json` shows it; at `status.observedGeneration` unless `generation`
    says otherwise (a spec the operator has not acted on yet)."""
    observed = status.observed_generation if status is not None else None
    obj: dict[str, Any] = {
        "apiVersion": "servicebuild.dev/v1alpha1",
        "kind": "ServiceBuild",
        "metadata": {
            "name": "checkout",
            "namespace": "shop",
            "uid": "6c1d4c35-8f0e-4a53-9d8c-2f6a1e0b7c11",
            "generation": generation or observed or 1,
            "creationTimestamp": format_time(CREATED),
        },
        "spec": SPEC,
    }
    if status is not None:
        obj["status"] = status_to_dict(status)
    return obj
