"""We test these aspects, with the real operator process, KMock's API emulator and a real registry:

- a ServiceBuild gets exactly one Job, owned by it, and ends Ready with the digest the registry
  serves for the tag and the size of that manifest (config + layers);
- conditions, phase, observedGeneration and one Event per transition; the preformatted fields kubectl's
  columns read (cache summary, duration);
- a spec change makes a new Job, deletes the superseded running one, and keeps the old output
  until the new build succeeds;
- a failing build ends Stalled with reason, failing step and log tail, and is not retried;
- an invalid spec ends Stalled InvalidSpec naming the field, with no Job;
- the operator killed mid-build and started again makes no duplicate Job and completes the status.
"""

import functools
from typing import Any

import helpers
import kmock
import pytest
from cluster import JOBS, Cluster, condition, eventually
from helpers import NAMESPACE, build_context_fixture, ready, served, stalled, status_of
from kubelet import Kubelet
from operator_process import OperatorProcess
from outage import SwitchableProxy

from servicebuild.api.models import format_duration
from support.oci_registry import RunningRegistry

CONTEXT = "checkout-context"
DOCKERFILE = """\
FROM alpine:3.20 AS build
COPY main.c .
RUN cc -o /greet main.c
FROM scratch
COPY --from=build /greet /greet
"""


# The ConfigMap every ServiceBuild here builds from, and their image: `checkout:1.4.2`.
build_context = build_context_fixture({"Dockerfile": DOCKERFILE, "main.c": "int main(){}"}, name=CONTEXT)
spec = functools.partial(helpers.spec, name="checkout", context=CONTEXT, tag="1.4.2")


async def test_build_ends_ready_with_the_registrys_digest_and_size(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    await cluster.create_servicebuild(NAMESPACE, "checkout", spec(oci_registry))

    body = await eventually(lambda: ready(cluster, "checkout", 1))

    response = served(oci_registry, "shop/checkout", "1.4.2")
    digest, manifest = response.headers["Docker-Content-Digest"], response.json()
    expected_size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    status = body["status"]
    assert status["output"]["digest"] == digest
    assert status["output"]["sizeBytes"] == expected_size
    assert status["output"]["layers"] == len(manifest["layers"]) == 3
    assert status["output"]["image"] == f"{oci_registry.host}/shop/checkout:1.4.2@{digest}"
    assert status["output"]["generation"] == 1
    assert status["phase"] == "Succeeded"
    assert status["observedGeneration"] == 1
    cache = status["cache"]
    assert {key: cache[key] for key in ("cachedSteps", "totalSteps", "summary")} == {
        "cachedSteps": 5,
        "totalSteps": 7,
        "summary": "5/7",
    }
    assert set(cache["inputs"]["files"]) == {"Dockerfile", "main.c"}  # for the next build's firstMiss
    assert status["duration"] == format_duration(status["durationSeconds"])
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        "CacheExported": "True",
        "DockerfileClean": "True",  # the ConfigMap context's Dockerfile was checked before the Job
    }
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])

    jobs = cluster.all(JOBS, NAMESPACE)
    assert len(jobs) == 1
    assert status["jobName"] == jobs[0]["metadata"]["name"]
    owner = jobs[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ServiceBuild",
        "checkout",
        body["metadata"]["uid"],
        True,
    )
    reasons = await eventually(
        lambda: [e["reason"] for e in cluster.events(NAMESPACE, "checkout")][-1:] == ["BuildSucceeded"]
    )
    assert reasons
    event_reasons = [e["reason"] for e in cluster.events(NAMESPACE, "checkout")]
    assert event_reasons.count("BuildSucceeded") == 1


async def test_spec_change_supersedes_the_running_build(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    await cluster.create_servicebuild(NAMESPACE, "cart", spec(oci_registry))
    first = await eventually(lambda: ready(cluster, "cart", 1))
    first_output = first["status"]["output"]

    kubelet.plan("cart", "hold")
    await cluster.change_spec(NAMESPACE, "cart", {"buildArgs": {"VERSION": "2"}})
    second_job = await eventually(lambda: next(iter(kubelet.held), None))
    building = cluster.servicebuild(NAMESPACE, "cart")["status"]
    assert building["output"] == first_output, "the last good output is kept while a new build runs"

    kubelet.plan("cart", "hold")
    await cluster.change_spec(NAMESPACE, "cart", {"buildArgs": {"VERSION": "3"}})
    await eventually(lambda: cluster.get(JOBS, NAMESPACE, second_job) is None)
    third_job = await eventually(lambda: next((name for name in kubelet.held if name != second_job), None))
    await kubelet.release(third_job)

    body = await eventually(lambda: ready(cluster, "cart", 3))
    assert body["status"]["jobName"] == third_job
    assert body["status"]["output"]["generation"] == 3
    assert body["status"]["output"]["digest"] == kubelet.pushed[third_job]
    assert body["status"]["output"]["digest"] != first_output["digest"]

    def generations() -> list[str]:
        return sorted(
            job["metadata"]["labels"]["servicebuild.dev/generation"] for job in cluster.all(JOBS, NAMESPACE)
        )

    # The superseded running Job is gone, and of the finished ones only the last successful build's stays
    # (SERVICEBUILD_SUCCESSFUL_JOBS_HISTORY_LIMIT, 1).
    await eventually(lambda: generations() == ["3"])


async def test_failed_build_is_stalled_with_step_and_log_tail(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    kubelet.plan("greet", "fail")
    await cluster.create_servicebuild(NAMESPACE, "greet", spec(oci_registry))

    body = await eventually(lambda: stalled(cluster, "greet"))
    status = body["status"]
    assert status["phase"] == "Failed"
    assert condition(body, "Stalled")["reason"] == "BuildStepFailed"
    assert condition(body, "Reconciling")["status"] == "False"
    assert condition(body, "Ready")["status"] == "False"
    assert status["failedStep"] == "[build 3/4] RUN make greet"
    assert "greet.h: No such file or directory" in status["logTail"]
    assert "output" not in status

    await eventually(lambda: "BuildStepFailed" in [e["reason"] for e in cluster.events(NAMESPACE, "greet")])
    assert len(cluster.all(JOBS, NAMESPACE)) == 1, "a failed build is not retried without a spec change"
    assert [e["type"] for e in cluster.events(NAMESPACE, "greet") if e["reason"] == "BuildStepFailed"] == [
        "Warning"
    ]


@pytest.mark.parametrize(
    ("bad_spec", "field"),
    [
        ({"output": {"image": "Not A Reference"}}, "spec.output.image"),
        ({"buildArgs": {"not-an-identifier": "1"}}, "spec.buildArgs"),
        ({"source": {}}, "spec.source"),
    ],
)
async def test_invalid_spec_is_stalled_naming_the_field(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    bad_spec: dict[str, Any],
    field: str,
) -> None:
    await cluster.create_servicebuild(NAMESPACE, "broken", {**spec(oci_registry), **bad_spec})

    body = await eventually(lambda: stalled(cluster, "broken"))
    assert condition(body, "Stalled")["reason"] == "InvalidSpec"
    assert field in condition(body, "Stalled")["message"]
    assert body["status"]["observedGeneration"] == 1
    assert cluster.all(JOBS, NAMESPACE) == []


async def test_restart_mid_build_makes_no_duplicate_job(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    kubelet.plan("orders", "hold")
    await cluster.create_servicebuild(NAMESPACE, "orders", spec(oci_registry))
    job_name = await eventually(lambda: next(iter(kubelet.held), None))
    await eventually(lambda: status_of(cluster, "orders").get("jobName") == job_name)

    operator.kill()
    await kubelet.release(job_name)
    operator.start()

    body = await eventually(lambda: ready(cluster, "orders", 1))
    assert body["status"]["output"]["digest"] == kubelet.pushed[job_name]
    assert [job["metadata"]["name"] for job in cluster.all(JOBS, NAMESPACE)] == [job_name]


async def test_registry_outage_during_readback_is_retried_until_ready(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    registry_proxy: SwitchableProxy,
) -> None:
    kubelet.mirrors[registry_proxy.host] = oci_registry.host
    kubelet.plan("payments", "hold")
    image = f"{registry_proxy.host}/shop/payments:7"
    await cluster.create_servicebuild(
        NAMESPACE, "payments", {**spec(oci_registry), "output": {"image": image}}
    )
    job_name = await eventually(lambda: next(iter(kubelet.held), None))

    registry_proxy.down()
    await kubelet.release(job_name)
    await eventually(lambda: registry_proxy.refused >= 2, within=60)
    verifying = cluster.servicebuild(NAMESPACE, "payments")
    assert condition(verifying, "Ready")["status"] == "False"
    assert condition(verifying, "Reconciling")["status"] == "True"
    assert condition(verifying, "Stalled")["status"] == "False", "an outage is not a permanent failure"
    assert operator.running

    registry_proxy.up = True
    body = await eventually(lambda: ready(cluster, "payments", 1), within=60)
    assert body["status"]["output"]["digest"] == kubelet.pushed[job_name]
    assert body["status"]["output"]["image"] == f"{image}@{kubelet.pushed[job_name]}"
    assert f"registry {registry_proxy.host} is unreachable" in operator.log


async def test_api_error_on_job_create_is_retried_without_duplicates(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    # The emulator stores the Job and then answers 503, as an API server whose reply is lost would.
    cluster.kmock[kmock.action.CREATE, JOBS][:1] << 503
    await cluster.create_servicebuild(NAMESPACE, "search", spec(oci_registry))

    body = await eventually(lambda: ready(cluster, "search", 1))
    assert len(cluster.all(JOBS, NAMESPACE)) == 1
    assert body["status"]["jobName"] == cluster.all(JOBS, NAMESPACE)[0]["metadata"]["name"]
    assert "HTTP 503" in operator.log
