"""Integration fixtures: the emulated API, a real registry, the kubelet stand-in, the real operator."""

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import pytest
from cluster import ApiServer, Cluster
from kubelet import Kubelet
from operator_process import OperatorProcess, operator_environment
from outage import SwitchableProxy

from support.oci_registry import RunningRegistry


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    """KMock's pytest fixture builds the emulator of this class."""
    return {**kmock_options, "cls": ApiServer}


@pytest.fixture
def cluster(kmock: ApiServer) -> Cluster:
    return Cluster(kmock)


@pytest.fixture
async def kubelet(cluster: Cluster) -> AsyncIterator[Kubelet]:
    stand_in = Kubelet(cluster)
    task = asyncio.create_task(stand_in.run())
    yield stand_in
    for pending in [task, *stand_in.completions]:
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending


@pytest.fixture
async def registry_proxy(oci_registry: RunningRegistry) -> AsyncIterator[SwitchableProxy]:
    """The registry behind a switch, for outages; reachable as plain HTTP like the registry itself."""
    host, port = oci_registry.host.rsplit(":", 1)
    proxy = SwitchableProxy(host, int(port))
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
def operator_env(
    kmock: kmock.KubernetesEmulator,
    oci_registry: RunningRegistry,
    registry_proxy: SwitchableProxy,
    tmp_path: Path,
) -> dict[str, str]:
    env = operator_environment(str(kmock.url), "test-token", tmp_path)
    env.update(
        SERVICEBUILD_INSECURE_REGISTRIES=f"{oci_registry.host},{registry_proxy.host}",
        SERVICEBUILD_RESYNC_SECONDS="2",
        # Plain image manifests, as the tests written before attestations expect; test_attestations.py
        # builds with the shipped default (min), which pushes an index.
        SERVICEBUILD_DEFAULT_PROVENANCE="off",
        # Leader election as deployed, shorter: an operator killed and started again leads again after
        # 10 s, not 15. The renew deadline leaves room for an emulator slowed by a loaded machine.
        SERVICEBUILD_LEASE_DURATION_SECONDS="10",
        SERVICEBUILD_LEASE_RENEW_DEADLINE_SECONDS="8",
        SERVICEBUILD_LEASE_RETRY_PERIOD_SECONDS="1",
        SERVICEBUILD_VERBOSE="true",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
async def operator(operator_env: dict[str, str], tmp_path: Path) -> AsyncIterator[OperatorProcess]:
    process = OperatorProcess(operator_env, tmp_path / "operator.log")
    process.start()
    yield process
    sys.stdout.write(f"--- operator log (tail) ---\n{process.log[-20000:]}\n")
    crashed = (
        not process.running and process.process is not None and process.process.returncode != -signal.SIGKILL
    )
    # In a thread: the emulator runs on this event loop and must answer the operator while it stops.
    await asyncio.to_thread(process.stop)
    assert not crashed, f"the operator exited by itself:\n{process.log[-4000:]}"
