"""We test what the operator logs at its default level, with the real operator process and KMock's API:

- an object that needs no work costs no log line: ConfigMaps no ServiceBuild builds from, and a
  ServiceBuild already built, found again when the operator restarts;
- what the operator does is logged: the build Job it creates and the transition to Ready;
- with SERVICEBUILD_LOG_FORMAT=json every line is one JSON object, and the lines about a build carry the
  ServiceBuild's namespace and name, the build number and the reason as fields.
"""

import asyncio
import json
from pathlib import Path

import kmock
import pytest
from cluster import SERVICEBUILDS, Cluster, eventually
from helpers import CONTEXT, NAMESPACE, ready, spec
from kubelet import Kubelet
from operator_process import OperatorProcess

from support.oci_registry import RunningRegistry

PROCESS_LOGGERS = ("servicebuild.leaders", "servicebuild.metrics")
"""Their lines are about the process (its lease, its servers), once per start: not about objects."""
UNRELATED = [f"app-settings-{index}" for index in range(5)]


@pytest.fixture
def operator_env(operator_env: dict[str, str]) -> dict[str, str]:
    return {**operator_env, "SERVICEBUILD_VERBOSE": "false"}


def since_last_start(log: str) -> str:
    return log.rpartition("===== start")[2]


async def test_objects_that_need_no_work_cost_no_log_line(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    for name in UNRELATED:
        await cluster.create_configmap(NAMESPACE, name, {"key": "value"})
    await cluster.create_configmap(NAMESPACE, CONTEXT, {"Dockerfile": "FROM scratch\n"})
    for name in ("checkout", "probe"):
        if name == "probe":
            # In a thread: the emulator runs on this event loop and must answer the operator while it stops.
            await asyncio.to_thread(operator.stop)
            operator.start()
        await cluster.create_servicebuild(NAMESPACE, name, spec(oci_registry, name))
        await eventually(lambda name=name: ready(cluster, name))
    # One resync tick after the probe went Ready: everything has been handled again at least once.
    resyncs = len(cluster.requests(kmock.action.LIST, SERVICEBUILDS))
    await eventually(lambda: len(cluster.requests(kmock.action.LIST, SERVICEBUILDS)) > resyncs)

    log = since_last_start(operator.log)
    info_lines = [line for line in log.splitlines() if "[INFO" in line]
    assert [line for line in info_lines if "kopf.objects" in line] == []
    own_lines = [
        line
        for line in info_lines
        if "servicebuild." in line and not any(logger in line for logger in PROCESS_LOGGERS)
    ]
    assert [line for line in own_lines if "probe" not in line] == []
    assert any("Created build Job shop/probe-" in line for line in own_lines), own_lines
    assert any("shop/probe: BuildSucceeded" in line for line in own_lines), own_lines


@pytest.mark.parametrize("log_format", ["json"])
async def test_json_lines_carry_the_servicebuild_the_build_and_the_reason(
    cluster: Cluster,
    kubelet: Kubelet,
    operator_env: dict[str, str],
    oci_registry: RunningRegistry,
    tmp_path: Path,
    log_format: str,
) -> None:
    process = OperatorProcess({**operator_env, "SERVICEBUILD_LOG_FORMAT": log_format}, tmp_path / "json.log")
    process.start()
    try:
        await cluster.create_configmap(NAMESPACE, CONTEXT, {"Dockerfile": "FROM scratch\n"})
        await cluster.create_servicebuild(NAMESPACE, "catalog", spec(oci_registry, "catalog"))
        await eventually(lambda: ready(cluster, "catalog"))
        await eventually(lambda: "BuildSucceeded" in process.log)
    finally:
        await asyncio.to_thread(process.stop)

    lines = [line for line in since_last_start(process.log).splitlines()[1:] if line.strip()]
    records = [json.loads(line) for line in lines]  # every line: one JSON object
    assert all({"message", "severity", "timestamp"} <= record.keys() for record in records), lines[:3]
    created = [record for record in records if record["message"].startswith("Created build Job")]
    succeeded = [record for record in records if record.get("reason") == "BuildSucceeded"]
    assert [(r["object"]["namespace"], r["object"]["name"], r["build"]) for r in created] == [
        (NAMESPACE, "catalog", 1)
    ]
    assert [(r["object"]["namespace"], r["object"]["name"], r["build"]) for r in succeeded] == [
        (NAMESPACE, "catalog", 1)
    ]
