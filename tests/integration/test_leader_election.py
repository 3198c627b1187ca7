"""We test that two replicas elect one leader on a Lease and that only the leader acts:

- the emulator refuses a Lease update naming a stale resourceVersion (409), as the API server does: without
  that, every election test below could pass with two leaders;
- two electors racing for a missing Lease, and for a released one, through the real gateway: one leads;
- two operator processes: both are ready (/readyz), the standby too, yet it acts on nothing while the
  leader lives; the leader killed mid-build,
  the standby takes over and finishes the build: one Job, and every acting write of the old leader comes
  before the new leader's first;
- a leader that can no longer write its Lease (a partition) stops acting before the standby takes over,
  and the standby finishes the builds.

Requests are told apart by each process's bearer token; order is the emulator's request log, never time.
"""

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import httpx
import kmock
import pytest
from cluster import EVENTS, JOBS, LEASES, SERVICEBUILDS, Cluster, eventually
from helpers import NAMESPACE, build_context_fixture, ready, spec
from kubelet import Kubelet
from kubernetes.client import ApiClient, Configuration
from operator_process import OperatorProcess, operator_environment

from servicebuild.election import Election, LeaseRecord, StoredLease
from servicebuild.kube import Kube
from servicebuild.leadership import Leadership
from support.oci_registry import RunningRegistry

build_context = build_context_fixture({"Dockerfile": "FROM scratch\n"})

LEASE_NAMESPACE = "servicebuild-system"
LEASE = "servicebuild-operator"


def gateway(cluster: Cluster, token: str) -> Kube:
    configuration = Configuration(host=str(cluster.kmock.url).rstrip("/"))
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return Kube(ApiClient(configuration), request_timeout=10)


def by(request: kmock.Request, token: str) -> bool:
    return request.headers.get("Authorization") == f"Bearer {token}"


def acting_writes(cluster: Cluster) -> list[kmock.Request]:
    """Job creations and deletions, status writes and Events, in the order the emulator served them."""
    return [
        request
        for request in cluster.kmock
        if (request.action, request.resource)
        in {
            (kmock.action.CREATE, JOBS),
            (kmock.action.DELETE, JOBS),
            (kmock.action.UPDATE, SERVICEBUILDS),
            (kmock.action.CREATE, EVENTS),
        }
        and (request.resource != SERVICEBUILDS or request.subresource == "status")
    ]


def same(stored: LeaseRecord, written: LeaseRecord) -> bool:
    """The record read back is the one written; the client may spell the times another way."""

    def moments(record: LeaseRecord) -> tuple[datetime, datetime]:
        return datetime.fromisoformat(record.acquired), datetime.fromisoformat(record.renewed)

    return replace(stored, acquired="", renewed="") == replace(written, acquired="", renewed="") and (
        moments(stored) == moments(written)
    )


def readiness(process: OperatorProcess) -> int | None:
    """The status of the process's /readyz; None while it does not answer."""
    try:
        address = process.env["SERVICEBUILD_METRICS_ADDRESS"]
        return httpx.get(f"http://{address}/readyz", timeout=2).status_code
    except httpx.TransportError:
        return None


def holder(cluster: Cluster) -> str:
    lease = cluster.get(LEASES, LEASE_NAMESPACE, LEASE) or {}
    return str(lease.get("spec", {}).get("holderIdentity") or "")


async def test_a_lease_update_naming_a_stale_version_is_refused(cluster: Cluster) -> None:
    kube = gateway(cluster, "tester")
    record = LeaseRecord("a", 15, "2026-11-30T10:00:00.000000Z", "2026-11-30T10:00:00.000000Z", 0)

    assert await asyncio.to_thread(kube.write_lease, LEASE_NAMESPACE, LEASE, record, None)
    assert not await asyncio.to_thread(kube.write_lease, LEASE_NAMESPACE, LEASE, record, None), "exists"
    stored = await asyncio.to_thread(kube.read_lease, LEASE_NAMESPACE, LEASE)
    assert stored is not None
    assert same(stored.record, record)
    renewed = LeaseRecord("a", 15, record.acquired, "2026-11-30T10:00:02.000000Z", 0)
    taken = LeaseRecord("b", 15, "2026-11-30T10:00:03.000000Z", "2026-11-30T10:00:03.000000Z", 1)

    assert await asyncio.to_thread(kube.write_lease, LEASE_NAMESPACE, LEASE, renewed, stored.resource_version)
    assert not await asyncio.to_thread(
        kube.write_lease, LEASE_NAMESPACE, LEASE, taken, stored.resource_version
    ), "the version read is no longer the Lease's"
    after = await asyncio.to_thread(kube.read_lease, LEASE_NAMESPACE, LEASE)
    assert after is not None
    assert same(after.record, renewed)


class InStep:
    """The real gateway, except that every read waits until each elector has read: they race."""

    def __init__(self, kube: Kube, barrier: threading.Barrier, written: list[bool]) -> None:
        self.kube = kube
        self.barrier = barrier
        self.written = written

    def read_lease(self, namespace: str, name: str) -> StoredLease | None:
        stored = self.kube.read_lease(namespace, name)
        self.barrier.wait(timeout=30)
        return stored

    def write_lease(
        self, namespace: str, name: str, record: LeaseRecord, resource_version: str | None
    ) -> bool:
        stored = self.kube.write_lease(namespace, name, record, resource_version)
        self.written.append(stored)
        return stored


def elector(cluster: Cluster, identity: str, barrier: threading.Barrier, written: list[bool]) -> Leadership:
    return Leadership(
        InStep(gateway(cluster, identity), barrier, written),
        namespace=LEASE_NAMESPACE,
        name=LEASE,
        election=Election(identity, duration=15, renew_deadline=10),
        retry_period=2,
    )


@pytest.mark.parametrize("lease", ["missing", "released"])
async def test_of_two_electors_racing_one_leads(cluster: Cluster, lease: str) -> None:
    if lease == "released":
        released = LeaseRecord("", 1, "2026-11-30T10:00:00.000000Z", "2026-11-30T10:00:05.000000Z", 3)
        assert await asyncio.to_thread(
            gateway(cluster, "x").write_lease, LEASE_NAMESPACE, LEASE, released, None
        )
    barrier, written = threading.Barrier(2), []
    electors = [elector(cluster, name, barrier, written) for name in ("replica-a", "replica-b")]

    leading = await asyncio.gather(*(asyncio.to_thread(each.try_acquire_or_renew) for each in electors))

    assert sorted(leading) == [False, True]
    [winner] = [each for each, leads in zip(electors, leading, strict=True) if leads]
    assert holder(cluster) == winner.election.identity
    assert sorted(written) == [False, True], "both wrote; the emulator stored one and refused the other"
    stored = await asyncio.to_thread(gateway(cluster, "x").read_lease, LEASE_NAMESPACE, LEASE)
    assert stored is not None
    assert stored.record.transitions == (4 if lease == "released" else 0)


# Two operator processes


@pytest.fixture
async def replicas(
    operator_env: dict[str, str], tmp_path: Path, cluster: Cluster
) -> AsyncIterator[dict[str, OperatorProcess]]:
    processes = {}
    for token in ("replica-a", "replica-b"):
        directory = tmp_path / token
        directory.mkdir()
        env = {
            **operator_env,
            **operator_environment(str(cluster.kmock.url), token, directory),
            "SERVICEBUILD_LEASE_NAMESPACE": LEASE_NAMESPACE,
        }
        processes[token] = OperatorProcess(env, directory / "operator.log")
    yield processes
    for process in processes.values():
        await asyncio.to_thread(process.stop)


def identity_of(cluster: Cluster, token: str) -> Callable[[], str | None]:
    """The identity a process wrote into the Lease, found by its token in the request log."""

    def find() -> str | None:
        for request in cluster.kmock:
            if request.resource == LEASES and by(request, token) and isinstance(request.data, dict):
                return str(request.data.get("spec", {}).get("holderIdentity") or "") or None
        return None

    return find


async def leader_then_standby(cluster: Cluster, replicas: dict[str, OperatorProcess]) -> str:
    """Start replica-a, wait until it holds the Lease, then start replica-b; the leader's identity."""
    replicas["replica-a"].start()
    leader_identity: str = await eventually(identity_of(cluster, "replica-a"))
    await eventually(lambda: holder(cluster) == leader_identity)
    replicas["replica-b"].start()
    await eventually(lambda: any(by(r, "replica-b") and r.resource == LEASES for r in cluster.kmock))
    return leader_identity


def writers(cluster: Cluster) -> list[str]:
    """Who made each acting write, in order."""
    return [("replica-a" if by(r, "replica-a") else "replica-b") for r in acting_writes(cluster)]


async def test_the_standby_finishes_the_build_of_a_leader_killed_mid_build(
    cluster: Cluster, kubelet: Kubelet, replicas: dict[str, OperatorProcess], oci_registry: RunningRegistry
) -> None:
    leader, standby = replicas["replica-a"], replicas["replica-b"]
    leader_identity = await leader_then_standby(cluster, replicas)
    kubelet.plan("cart", "hold")
    await cluster.create_servicebuild(NAMESPACE, "cart", spec(oci_registry, "cart"))
    job_name = await eventually(lambda: next(iter(kubelet.held), None))
    await eventually(lambda: cluster.servicebuild(NAMESPACE, "cart").get("status", {}).get("jobName"))
    assert await eventually(lambda: readiness(standby) == 200), "a standby is ready: it serves metrics"
    assert readiness(leader) == 200
    assert not [r for r in acting_writes(cluster) if by(r, "replica-b")], "the standby acted"

    leader.kill()
    await kubelet.release(job_name)
    body = await eventually(lambda: ready(cluster, "cart"), within=90)

    assert holder(cluster) not in ("", leader_identity)
    [job] = cluster.all(JOBS, NAMESPACE)
    assert job["metadata"]["name"] == job_name
    assert body["status"]["output"]["digest"] == kubelet.pushed[job_name]
    order = writers(cluster)
    assert "replica-b" in order, "the new leader wrote the result"
    assert order == sorted(order), f"the writers interleave: {order}"
    assert len(cluster.requests(kmock.action.CREATE, JOBS)) == 1, "one Job, created once"


async def test_a_leader_that_cannot_renew_stops_acting_before_the_standby_takes_over(
    cluster: Cluster, kubelet: Kubelet, replicas: dict[str, OperatorProcess], oci_registry: RunningRegistry
) -> None:
    leader = replicas["replica-a"]
    leader_identity = await leader_then_standby(cluster, replicas)
    await cluster.create_servicebuild(NAMESPACE, "before", spec(oci_registry, "before"))
    await eventually(lambda: ready(cluster, "before"))

    # The leader can still reach everything but its Lease: it cannot renew.
    cluster.kmock.unreachable = lambda request: request.resource == LEASES and by(request, "replica-a")
    await eventually(lambda: "No longer leading" in leader.log, within=60)
    await eventually(lambda: holder(cluster) not in ("", leader_identity), within=60)
    await cluster.create_servicebuild(NAMESPACE, "after", spec(oci_registry, "after"))
    await eventually(lambda: ready(cluster, "after"), within=90)

    order = writers(cluster)
    assert order == sorted(order), f"the writers interleave: {order}"
    assert order[0] == "replica-a", "the first leader built `before`"
    assert order[-1] == "replica-b", "the new leader built `after`"
    assert leader.running, "a deposed leader stands by; it does not exit"
