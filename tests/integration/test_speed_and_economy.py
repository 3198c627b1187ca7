"""We test how fast and how cheaply the real operator builds, against KMock's API and a real registry:

- Ready is written as soon as the build container ends, before the Job controller completes the Job
  (the build Pods are watched; the resync is off here, so nothing else could tell);
- one successful build from apply to Ready costs at most 8 API writes, everything counted (the Job,
  status patches, Events, Kopf's own annotations), and a resync of objects with nothing to do writes
  nothing and reads no object one by one. The leader's Lease renewals are not counted: they are the
  process's (one read and one write per retry period, 2 s deployed), the same for no build or many.
"""

from collections import Counter
from typing import Any

import kmock
import pytest
from cluster import JOBS, LEASES, SERVICEBUILDS, Cluster, condition, eventually
from helpers import NAMESPACE, build_context_fixture, ready, spec
from kubelet import Kubelet
from operator_process import OperatorProcess

from support.oci_registry import RunningRegistry

OPERATOR_TOKEN = "Bearer test-token"  # noqa: S105 - the emulator's token for the operator, not a secret
WRITES = {kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE}
MAX_WRITES_PER_BUILD = 8

build_context = build_context_fixture({"Dockerfile": "FROM scratch\n"})


def operator_requests(cluster: Cluster) -> list[kmock.Request]:
    """The requests the operator made for builds (the harness's own carry no token; the Lease's are the
    election's)."""
    return [
        request
        for request in cluster.kmock
        if request.headers.get("Authorization") == OPERATOR_TOKEN and request.resource != LEASES
    ]


def writes(requests: list[kmock.Request]) -> Counter[str]:
    return Counter(
        f"{request.action.value.lower()} {request.resource.plural if request.resource else request.url.path}"
        f"{'/' + request.subresource if request.subresource else ''}"
        for request in requests
        if request.action in WRITES
    )


@pytest.fixture
def operator_env(operator_env: dict[str, str], request: pytest.FixtureRequest) -> dict[str, str]:
    return {**operator_env, **getattr(request, "param", {})}


@pytest.mark.parametrize("operator_env", [{"SERVICEBUILD_RESYNC_SECONDS": "3600"}], indirect=True)
async def test_ready_before_the_job_controller_completes_the_job(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    kubelet.job_counts_pod_out = False
    kubelet.job_completion_delay = 3600
    await cluster.create_servicebuild(NAMESPACE, "fast", spec(oci_registry, "fast"))

    body: dict[str, Any] = await eventually(lambda: ready(cluster, "fast"))

    [job] = cluster.all(JOBS, NAMESPACE)
    assert not job["status"].get("conditions"), "the Job controller has not finished the Job"
    assert job["status"]["active"] == 1
    assert body["status"]["output"]["digest"] == kubelet.pushed[job["metadata"]["name"]]


async def test_one_build_costs_at_most_eight_writes_and_an_idle_resync_none(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    await cluster.create_servicebuild(NAMESPACE, "cheap", spec(oci_registry, "cheap"))
    await eventually(lambda: ready(cluster, "cheap"))
    # Until the Job controller has finished the Job, and the operator has seen that.
    [job_name] = kubelet.pushed
    await eventually(lambda: condition(cluster.get(JOBS, NAMESPACE, job_name) or {}, "Complete"))
    lists = len(cluster.requests(kmock.action.LIST, SERVICEBUILDS))
    await eventually(lambda: len(cluster.requests(kmock.action.LIST, SERVICEBUILDS)) > lists)
    build_writes = writes(operator_requests(cluster))
    assert sum(build_writes.values()) <= MAX_WRITES_PER_BUILD, build_writes

    before = len(operator_requests(cluster))
    lists = len(cluster.requests(kmock.action.LIST, SERVICEBUILDS))
    await eventually(lambda: len(cluster.requests(kmock.action.LIST, SERVICEBUILDS)) >= lists + 2)
    during_resyncs = operator_requests(cluster)[before:]
    assert writes(during_resyncs) == Counter()
    fetched = [request for request in during_resyncs if request.action == kmock.action.FETCH]
    assert fetched == [], "an object with nothing to do is not read one by one"
