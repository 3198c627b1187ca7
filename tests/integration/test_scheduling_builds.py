"""We test how builds are scheduled over time, with the real operator, KMock's API and a real registry:

- over the operator-wide limit, builds wait in phase Queued with their position and start first
  come first served as running builds finish;
- an evicted build Pod (transient) is retried as a new attempt and ends Ready, with the attempt in
  status; a failing build (permanent) is never retried;
- a spec changed several times during a build coalesces into one next build.
"""

import pytest
from cluster import JOBS, Cluster, condition, eventually
from helpers import NAMESPACE, after_resyncs, build_context_fixture, ready, spec, status_of
from kubelet import Kubelet
from operator_process import OperatorProcess

from support.oci_registry import RunningRegistry


@pytest.fixture
def operator_env(operator_env: dict[str, str]) -> dict[str, str]:
    return {**operator_env, "SERVICEBUILD_MAX_RUNNING_BUILDS": "1", "SERVICEBUILD_RETRY_DELAY_SECONDS": "1"}


build_context = build_context_fixture({"Dockerfile": "FROM scratch\n"})


def queued_at(cluster: Cluster, name: str, position: int) -> bool:
    status = status_of(cluster, name)
    return status.get("phase") == "Queued" and status.get("queue", {}).get("position") == position


async def test_builds_over_the_limit_wait_their_turn(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    for name in ("first", "second", "third"):
        kubelet.plan(name, "hold")
        await cluster.create_servicebuild(NAMESPACE, name, spec(oci_registry, name))
        if name == "first":
            await eventually(lambda: len(kubelet.held) == 1)
    await eventually(lambda: queued_at(cluster, "second", 1) and queued_at(cluster, "third", 2))
    assert len(cluster.all(JOBS, NAMESPACE)) == 1
    assert (
        condition(cluster.servicebuild(NAMESPACE, "third"), "Reconciling")["reason"] == "WaitingForCapacity"
    )

    for running, following in (("first", "second"), ("second", "third")):
        [job_name] = kubelet.held
        assert job_name.startswith(running)
        await kubelet.release(job_name)
        await eventually(lambda name=running: ready(cluster, name, 1))
        await eventually(lambda prefix=following: any(held.startswith(prefix) for held in kubelet.held))
        assert len(kubelet.held) == 1, "one build at a time"
    await kubelet.release(next(iter(kubelet.held)))
    await eventually(lambda: ready(cluster, "third", 1))
    assert "queue" not in status_of(cluster, "third")
    assert len(cluster.all(JOBS, NAMESPACE)) == 3


async def test_evicted_build_is_retried_as_a_new_attempt(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    kubelet.plan("cart", "evicted", "succeed")
    await cluster.create_servicebuild(NAMESPACE, "cart", spec(oci_registry, "cart"))

    body = await eventually(lambda: ready(cluster, "cart", 1))
    jobs = cluster.all(JOBS, NAMESPACE)
    assert len(jobs) == 2, "the evicted attempt and the successful one"
    assert body["status"]["attempt"] == 2
    assert body["status"]["output"]["digest"] == kubelet.pushed[body["status"]["jobName"]]
    # Whether `RetryScheduled` is ever written depends on when the operator looks within the delay;
    # test_reconciler.py pins the retry's timing with an injected clock.
    await eventually(
        lambda: "BuildSucceeded" in [event["reason"] for event in cluster.events(NAMESPACE, "cart")]
    )


async def test_failed_build_is_not_retried(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    kubelet.plan("broken", "fail")
    await cluster.create_servicebuild(NAMESPACE, "broken", spec(oci_registry, "broken"))

    await eventually(lambda: condition(cluster.servicebuild(NAMESPACE, "broken"), "Stalled") is not None)
    await eventually(lambda: status_of(cluster, "broken").get("phase") == "Failed")
    await after_resyncs(cluster)
    assert len(cluster.all(JOBS, NAMESPACE)) == 1
    assert "attempt" not in status_of(cluster, "broken")


async def test_spec_changes_during_a_build_coalesce_into_one_next_build(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    kubelet.plan("search", "hold")
    await cluster.create_servicebuild(NAMESPACE, "search", spec(oci_registry, "search"))
    await eventually(lambda: kubelet.held)

    # Frozen, so that the three changes are all made before the operator looks (a slow machine could
    # otherwise start a build of generation 2 before the test makes generation 3).
    with operator.frozen():
        for version in ("2", "3", "4"):
            generation = await cluster.change_spec(NAMESPACE, "search", {"buildArgs": {"VERSION": version}})

    await eventually(lambda: ready(cluster, "search", generation))
    started = sorted(name for _, name in kubelet.handled)
    assert len(started) == 2, f"the first build and one for generation {generation}: {started}"
    newest = cluster.get(JOBS, NAMESPACE, started[1])
    assert newest is not None
    assert newest["metadata"]["labels"]["servicebuild.dev/generation"] == str(generation)
    assert started[1].startswith("search-2-"), "the second build"
