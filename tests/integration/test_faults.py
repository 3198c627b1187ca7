"""We test that faults of the cluster lose nothing and duplicate nothing, each ending with the right status:

- the operator killed (SIGKILL) and started again at each phase of a build: before the Job exists,
  while it runs, after it finished but before the result was read, after the status was written;
- transient failures retried until the attempts run out end Stalled, one Job per attempt;
- the build Job deleted by someone mid-build: it is created again and the build completes;
- the Job removed (by its TTL) after it finished but before the operator read the result: the
  operator, restarted, builds again rather than reporting a result it cannot verify;
- API conflicts (409) on status writes: retried until the status is written;
- a Job the API server refuses for good (a quota): Stalled with the server's explanation, not retried;
- the watch expiring (410 Gone) on every attempt: Kopf lists again and new ServiceBuilds are still built.
"""

import kmock
import pytest
from cluster import JOBS, PODS, SERVICEBUILDS, Cluster, condition, eventually
from helpers import NAMESPACE, after_resyncs, build_context_fixture, ready, spec, status_of
from kubelet import Kubelet
from operator_process import OperatorProcess

from support.oci_registry import RunningRegistry

build_context = build_context_fixture({"Dockerfile": "FROM scratch\n"})


@pytest.mark.parametrize("moment", ["before-job", "while-running", "finished-unread", "after-ready"])
async def test_operator_killed_at_any_phase_resumes_the_build(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry, moment: str
) -> None:
    kubelet.plan("cart", "hold")
    if moment == "before-job":
        operator.kill()
        await cluster.create_servicebuild(NAMESPACE, "cart", spec(oci_registry, "cart"))
    else:
        await cluster.create_servicebuild(NAMESPACE, "cart", spec(oci_registry, "cart"))
        await eventually(lambda: kubelet.held)
        if moment == "after-ready":
            await kubelet.release(next(iter(kubelet.held)))
            await eventually(lambda: ready(cluster, "cart"))
        operator.kill()
        if moment == "finished-unread":
            await kubelet.release(next(iter(kubelet.held)))
    before = cluster.servicebuild(NAMESPACE, "cart").get("status", {})
    operator.start()

    if moment in {"before-job", "while-running"}:
        await eventually(lambda: kubelet.held)
        await kubelet.release(next(iter(kubelet.held)))
    body = await eventually(lambda: ready(cluster, "cart"))
    [job] = cluster.all(JOBS, NAMESPACE)
    assert body["status"]["jobName"] == job["metadata"]["name"]
    assert body["status"]["output"]["digest"] == kubelet.pushed[job["metadata"]["name"]]
    if moment == "after-ready":
        await after_resyncs(cluster)
        assert cluster.servicebuild(NAMESPACE, "cart")["status"] == before, (
            "nothing to redo, nothing rewritten"
        )


@pytest.mark.parametrize("operator_env", [{"SERVICEBUILD_RETRY_DELAY_SECONDS": "0"}], indirect=True)
async def test_transient_failures_end_stalled_when_the_attempts_run_out(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    kubelet.plan("flaky", "evicted", "evicted", "evicted", "succeed")
    await cluster.create_servicebuild(NAMESPACE, "flaky", spec(oci_registry, "flaky"))

    await eventually(lambda: status_of(cluster, "flaky").get("phase") == "Failed")
    body = cluster.servicebuild(NAMESPACE, "flaky")
    assert condition(body, "Stalled")["reason"] == "Evicted"
    assert body["status"]["attempt"] == 3
    assert len(cluster.all(JOBS, NAMESPACE)) == 3, "SERVICEBUILD_MAX_BUILD_ATTEMPTS defaults to 3"


async def remove_job(cluster: Cluster, kubelet: Kubelet, job_name: str) -> None:
    """Delete the Job and, as the garbage collector would, its Pod; the kubelet forgets both."""
    await cluster.delete(JOBS, NAMESPACE, job_name)
    await cluster.delete(PODS, NAMESPACE, f"{job_name}-x7k2p")
    kubelet.held.pop(job_name, None)


async def test_job_deleted_mid_build_is_created_again(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    kubelet.plan("cart", "hold")
    await cluster.create_servicebuild(NAMESPACE, "cart", spec(oci_registry, "cart"))
    job_name = await eventually(lambda: next(iter(kubelet.held), None))

    await remove_job(cluster, kubelet, job_name)
    await eventually(lambda: cluster.get(JOBS, NAMESPACE, job_name) is not None)
    kubelet.handled.discard((NAMESPACE, job_name))  # a new Job under the same name: run it

    body = await eventually(lambda: ready(cluster, "cart"))
    assert [job["metadata"]["name"] for job in cluster.all(JOBS, NAMESPACE)] == [job_name]
    assert body["status"]["output"]["digest"] == kubelet.pushed[job_name]


async def test_job_gone_before_its_result_was_read_is_built_again(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    kubelet.plan("orders", "hold")
    await cluster.create_servicebuild(NAMESPACE, "orders", spec(oci_registry, "orders"))
    job_name = await eventually(lambda: next(iter(kubelet.held), None))

    operator.kill()
    await kubelet.release(job_name)
    await remove_job(cluster, kubelet, job_name)
    kubelet.pushed.pop(job_name)
    operator.start()
    await eventually(lambda: cluster.get(JOBS, NAMESPACE, job_name) is not None)
    kubelet.handled.discard((NAMESPACE, job_name))

    body = await eventually(lambda: ready(cluster, "orders"))
    assert len(cluster.all(JOBS, NAMESPACE)) == 1
    assert body["status"]["output"]["digest"] == kubelet.pushed[job_name], "the result of the build again"


async def test_conflicts_on_status_writes_are_retried(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    cluster.kmock[kmock.action.UPDATE, SERVICEBUILDS][:3] << 409
    await cluster.create_servicebuild(NAMESPACE, "search", spec(oci_registry, "search"))

    body = await eventually(lambda: ready(cluster, "search"))
    assert len(cluster.all(JOBS, NAMESPACE)) == 1
    assert body["status"]["observedGeneration"] == 1
    assert "HTTP 409" in operator.log
    assert operator.running


@pytest.fixture
def operator_env(operator_env: dict[str, str], request: pytest.FixtureRequest) -> dict[str, str]:
    extra: dict[str, str] = getattr(request, "param", {})
    if request.node.name == "test_watch_expiry_lists_again":
        # Short watches, so that one expires during the test, and no resync to build in its stead.
        extra = {"SERVICEBUILD_WATCH_TIMEOUT_SECONDS": "1", "SERVICEBUILD_RESYNC_SECONDS": "3600"}
    return {**operator_env, **extra}


async def test_watch_expiry_lists_again(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    gone = {
        "type": "ERROR",
        "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"},
    }
    # Every watch of ServiceBuilds from now on expires at once: only listing again finds new ones.
    expiry = cluster.kmock[kmock.action.WATCH, SERVICEBUILDS] << (gone,)
    await eventually(lambda: len(expiry) > 0, within=30)

    await cluster.create_servicebuild(NAMESPACE, "after", spec(oci_registry, "after"))
    await eventually(lambda: ready(cluster, "after"))
    assert len(cluster.all(JOBS, NAMESPACE)) == 1
    assert operator.running


async def test_job_the_api_server_rejects_is_stalled_with_its_explanation(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    explanation = 'Job.batch "quota" is forbidden: exceeded quota: builds, requested: limits.memory=4Gi'
    rejection = cluster.kmock[kmock.action.CREATE, JOBS] << 403 << {"kind": "Status", "message": explanation}
    await cluster.create_servicebuild(NAMESPACE, "quota", spec(oci_registry, "quota"))

    await eventually(lambda: status_of(cluster, "quota").get("phase") == "Failed")
    stalled = condition(cluster.servicebuild(NAMESPACE, "quota"), "Stalled")
    assert stalled["reason"] == "JobRejected"
    assert explanation in stalled["message"]
    await after_resyncs(cluster)
    assert len(rejection) == 1, "a permanent rejection is not retried"
