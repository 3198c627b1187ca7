"""We test these aspects of the operator's metrics, recorded by the real `Reconciler` (in-memory gateways,
an injected clock) and the handlers, read back from the operator's registry:

- a build is counted once, by namespace, result, condition reason and trigger, when the status recording
  its end is written: not again when the reconcile repeats, nor by a restarted operator reading that status;
  its duration and cache-hit ratio are observed with it;
- a failed build counts its Stalled reason, a build stopped for a newer spec counts as Superseded, the
  newer one as SpecChanged;
- a build over the slot limit shows in the queued gauge, then in running once it starts, its queue wait
  and reaction observed from when it was found due; both gauges read 0 once the build ends;
- the image size follows status; a deleted ServiceBuild's series go (its namespace's too, when it was the
  last);
- reconciles that fail count their error kind: the gateway error's class, or Unexpected.
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_reconciler import BUILD_FAILURE_LOG, DIGEST, IMAGE, METADATA, NAMESPACE, START, World

from servicebuild import handlers
from servicebuild.admission import BuildSlots, Running
from servicebuild.config import Settings
from servicebuild.kube import KubeError
from servicebuild.metrics import OperatorMetrics
from servicebuild.reconciler import Reconciler
from support.fakes import IMAGE_SIZE, FakeGit, FakeKube, FakeRegistry, FakeRuns

NAME = METADATA["name"]
CACHE_METRICS = {"total": 9, "completed": 9, "user_total": 8, "user_cached": 6, "user_completed": 8}


def sample(world: World, name: str, **labels: str) -> float | None:
    return world.reconciler.metrics.registry.get_sample_value(name, labels)


def built(result: str, reason: str, trigger: str) -> dict[str, str]:
    return {"namespace": NAMESPACE, "result": result, "reason": reason, "trigger": trigger}


def report_with_cache() -> str:
    return json.dumps({"digest": DIGEST, "imageName": IMAGE, "cacheMetrics": CACHE_METRICS})


def test_a_build_is_counted_once_when_its_end_is_written() -> None:
    world = World()
    world.reconcile(0)
    assert (
        sample(world, "servicebuild_builds_total", **built("Succeeded", "BuildSucceeded", "Created")) is None
    )

    status = world.build(1, report_with_cache())
    for seconds in (20, 40):
        world.reconcile(seconds)
    # The same end written once more (a write that raced, a condition's message changed): no new build.
    world.reconciler.metrics.status_written(NAMESPACE, status, status.model_copy(update={"message": "again"}))

    assert status.duration_seconds == 5
    assert sample(world, "servicebuild_builds_total", **built("Succeeded", "BuildSucceeded", "Created")) == 1
    succeeded = {"namespace": NAMESPACE, "result": "Succeeded"}
    assert sample(world, "servicebuild_build_duration_seconds_count", **succeeded) == 1
    assert sample(world, "servicebuild_build_duration_seconds_sum", **succeeded) == 5
    assert sample(world, "servicebuild_cache_hit_ratio_count") == 1
    assert sample(world, "servicebuild_cache_hit_ratio_sum") == pytest.approx(6 / 8)
    assert (
        sample(world, "servicebuild_image_size_bytes", namespace=NAMESPACE, servicebuild=NAME) == IMAGE_SIZE
    )


def test_a_restarted_operator_does_not_count_a_build_whose_end_was_written() -> None:
    world = World()
    world.reconcile(0)
    world.build(1)

    world.reconciler = Reconciler(
        world.kube,
        world.registry,
        world.git,
        Settings(),
        runs=FakeRuns(datetime(2026, 11, 28, 10, tzinfo=UTC)),
    )
    world.reconcile(60)

    assert (
        sample(world, "servicebuild_builds_total", **built("Succeeded", "BuildSucceeded", "Created")) is None
    )
    assert (
        sample(world, "servicebuild_image_size_bytes", namespace=NAMESPACE, servicebuild=NAME) == IMAGE_SIZE
    )


def test_failed_and_superseded_builds_count_their_reason_and_trigger() -> None:
    world = World()
    world.reconcile(0)
    world.start(1)
    world.change_spec(buildArgs={"VERSION": "2"})
    world.reconcile(5)
    world.start(6)
    world.end(10, {"exitCode": 1, "reason": "Error", "message": BUILD_FAILURE_LOG})
    world.reconcile(11)

    assert sample(world, "servicebuild_builds_total", **built("Superseded", "Superseded", "Created")) == 1
    assert (
        sample(world, "servicebuild_builds_total", **built("Failed", "BuildStepFailed", "SpecChanged")) == 1
    )
    assert (
        sample(world, "servicebuild_build_duration_seconds_count", namespace=NAMESPACE, result="Failed") == 1
    )
    assert sample(world, "servicebuild_cache_hit_ratio_count") == 0


def test_a_queued_build_shows_in_the_gauges_and_its_wait_when_it_starts() -> None:
    world = World(Settings(max_running_builds=1))
    world.reconciler.metrics = OperatorMetrics(
        world.reconciler.slots.load, clock=lambda: START + timedelta(seconds=20.5)
    )
    other = ("shop", "other")
    world.reconciler.slots.update(other, Running("other-1"))

    assert world.reconcile(0).phase == "Queued"
    assert sample(world, "servicebuild_builds_queued", namespace=NAMESPACE) == 1
    assert sample(world, "servicebuild_builds_running", namespace=NAMESPACE) == 1
    assert sample(world, "servicebuild_build_queue_wait_seconds_count") == 0

    assert world.reconciler.forget(other) == ((NAMESPACE, NAME),)
    assert world.reconcile(20).phase == "Pending"
    assert sample(world, "servicebuild_builds_queued", namespace=NAMESPACE) == 0
    assert sample(world, "servicebuild_builds_running", namespace=NAMESPACE) == 1
    assert sample(world, "servicebuild_build_queue_wait_seconds_sum") == 20
    assert sample(world, "servicebuild_reaction_seconds_sum") == 20.5

    world.build(21)
    assert sample(world, "servicebuild_builds_queued", namespace=NAMESPACE) == 0
    assert sample(world, "servicebuild_builds_running", namespace=NAMESPACE) == 0


def test_a_deleted_servicebuild_takes_its_series_with_it() -> None:
    world = World()
    world.reconcile(0)
    world.build(1)
    assert sample(world, "servicebuild_builds_running", namespace=NAMESPACE) == 0

    world.reconciler.forget((NAMESPACE, NAME))

    assert sample(world, "servicebuild_image_size_bytes", namespace=NAMESPACE, servicebuild=NAME) is None
    assert sample(world, "servicebuild_builds_running", namespace=NAMESPACE) is None
    assert sample(world, "servicebuild_builds_queued", namespace=NAMESPACE) is None


class FailingKube:
    """The Kubernetes API failing every read as `error` says."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_servicebuild(self, namespace: str, name: str) -> dict[str, Any] | None:  # noqa: ARG002
        raise self.error


@pytest.mark.parametrize(
    ("error", "kind"),
    [(KubeError("the API server is away", transient=True), "KubeError"), (ValueError("a bug"), "Unexpected")],
)
def test_failed_reconciles_count_their_kind(error: Exception, kind: str) -> None:
    reconciler = Reconciler(
        FakeKube(now="2026-11-28T10:00:00Z"),
        FakeRegistry(),
        FakeGit(),
        Settings(),
        runs=FakeRuns(datetime(2026, 11, 28, 10, tzinfo=UTC)),
    )
    runtime = handlers.Runtime(settings=Settings(), kube=FailingKube(error), reconciler=reconciler)  # type: ignore[arg-type]

    handlers._reconcile_quietly(runtime, (NAMESPACE, NAME))
    handlers._reconcile_quietly(runtime, (NAMESPACE, NAME))

    assert (
        reconciler.metrics.registry.get_sample_value("servicebuild_reconcile_errors_total", {"kind": kind})
        == 2
    )


def test_the_registry_holds_the_process_collector() -> None:
    registry = OperatorMetrics(BuildSlots().load).registry
    assert registry.get_sample_value("process_start_time_seconds") is not None
