"""We test these aspects of build inputs, with the real operator, KMock's API and a real registry:

- a change of a ConfigMap context rebuilds the same generation, and status records the digest built;
- a missing ConfigMap stalls as SourceNotFound and builds once it exists;
- a new spec that cannot start (a missing Secret) still stops the older generation's running build;
- build secrets reach the Job only as a Secret volume and `--secret` by id: a canary value never
  appears in the Job, the Pod, events, status or the operator's log; a missing one is SecretNotFound;
- a git source resolves against a real git server on loopback with a token: status records the
  commit, the Job builds exactly that commit, tags expand with it; a wrong token is GitAuthFailed;
- a multi-platform build records each platform's digest and size as the registry serves them;
- a failed cache export never fails the build and shows as CacheExported=False;
- a Pod that never starts ends Stalled PendingTimeout and its Job is deleted;
- a Kueue queue label: the Job waits suspended as BuildQueued, the operator never resumes it;
- a per-ServiceBuild BuildKit image only from the operator's allowlist;
- a namespace pushes only to the registries the operator allows it.
"""

import asyncio
import base64
import functools
import json
import secrets
from typing import Any

import helpers
import pytest
from cluster import CONFIGMAPS, EVENTS, JOBS, PODS, SERVICEBUILDS, Cluster, condition, eventually
from helpers import (
    NAMESPACE,
    after_resyncs,
    build_context_fixture,
    ready,
    served,
    stalled,
    status_of,
    with_condition,
)
from kubelet import Kubelet, build_args
from operator_process import OperatorProcess

from support.git_server import GitHttpServer
from support.oci_registry import OCI_INDEX, RunningRegistry

CONTEXT = "cart-context"
ALLOWED_BUILDER = "registry.example.com/buildkit:v0.32.2-rootless-patched"


@pytest.fixture
def operator_env(operator_env: dict[str, str], oci_registry: RunningRegistry) -> dict[str, str]:
    return {
        **operator_env,
        "SERVICEBUILD_ALLOWED_BUILDER_IMAGES": ALLOWED_BUILDER,
        "SERVICEBUILD_ALLOWED_PUSH_REGISTRIES": json.dumps({NAMESPACE: [oci_registry.host]}),
    }


build_context = build_context_fixture({"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "1"}, name=CONTEXT)
spec = functools.partial(helpers.spec, context=CONTEXT)


async def stalled_without_job(cluster: Cluster, name: str, reason: str, field: str) -> dict[str, Any]:
    """Wait until `name` is Stalled for `reason` with a message naming `field`, and check it has no Job."""
    body: dict[str, Any] = await eventually(lambda: stalled(cluster, name))
    assert condition(body, "Stalled")["reason"] == reason
    assert field in condition(body, "Stalled")["message"]
    assert jobs_of(cluster, name) == []
    return body


def jobs_of(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return [
        job
        for job in cluster.all(JOBS, NAMESPACE)
        if job["metadata"]["annotations"]["servicebuild.dev/servicebuild"] == name
    ]


def everything_the_operator_wrote(cluster: Cluster, operator: OperatorProcess) -> str:
    """Jobs, Pods, events, ServiceBuild statuses and the operator's own log, as one text."""
    objects = [cluster.all(resource, NAMESPACE) for resource in (JOBS, PODS, EVENTS)]
    statuses = [body.get("status") for body in cluster.all(SERVICEBUILDS, NAMESPACE)]
    return json.dumps([objects, statuses]) + operator.log


def assert_never_written(value: str, cluster: Cluster, operator: OperatorProcess) -> None:
    written = everything_the_operator_wrote(cluster, operator)
    for form in (value, base64.b64encode(value.encode()).decode()):
        assert form not in written


async def test_configmap_change_rebuilds_and_records_what_was_built(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    await cluster.create_servicebuild(NAMESPACE, "cart", spec(oci_registry, "cart"))
    first = await eventually(lambda: ready(cluster, "cart"))
    first_digest = first["status"]["source"]["contextDigest"]

    await cluster.patch(CONFIGMAPS, NAMESPACE, CONTEXT, {"data": {"a": "2"}})

    def rebuilt() -> Any:
        body = ready(cluster, "cart")
        return body if body and body["status"]["source"]["contextDigest"] != first_digest else None

    second = await eventually(rebuilt)
    assert second["metadata"]["generation"] == second["status"]["observedGeneration"] == 1
    jobs = jobs_of(cluster, "cart")
    assert len(jobs) == 2, "one Job per context: the change made exactly one new build"
    assert second["status"]["jobName"] != first["status"]["jobName"]
    built = {job["metadata"]["annotations"]["servicebuild.dev/context-digest"] for job in jobs}
    assert built == {first_digest, second["status"]["source"]["contextDigest"]}
    assert second["status"]["output"]["digest"] == kubelet.pushed[second["status"]["jobName"]]


async def test_missing_configmap_is_stalled_until_it_exists(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    late = {**spec(oci_registry, "late"), "source": {"configMap": {"name": "late-context"}}}
    await cluster.create_servicebuild(NAMESPACE, "late", late)

    await stalled_without_job(cluster, "late", "SourceNotFound", "spec.source.configMap.name")

    await cluster.create_configmap(NAMESPACE, "late-context", {"Dockerfile": "FROM scratch\n"})
    await eventually(lambda: ready(cluster, "late"))
    assert len(jobs_of(cluster, "late")) == 1


async def test_build_secret_reaches_the_build_only_by_reference(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    canary = f"canary-{secrets.token_hex(16)}"
    push_canary = f"push-canary-{secrets.token_hex(16)}"
    await cluster.create_secret(NAMESPACE, "npm", {"token": canary.encode()})
    auth = base64.b64encode(f"builder:{push_canary}".encode()).decode()
    docker_config = {"auths": {oci_registry.host: {"auth": auth}}}
    await cluster.create_secret(
        NAMESPACE,
        "registry-push",
        {".dockerconfigjson": json.dumps(docker_config).encode()},
        "kubernetes.io/dockerconfigjson",
    )
    build_secrets = [{"id": "npmrc", "secretRef": {"name": "npm", "key": "token"}}]
    web = spec(oci_registry, "web", secrets=build_secrets)
    web["output"]["pushSecret"] = "registry-push"
    await cluster.create_servicebuild(NAMESPACE, "web", web)

    await eventually(lambda: ready(cluster, "web"))
    [job] = jobs_of(cluster, "web")
    pod_spec = job["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod_spec["volumes"]}
    assert volumes["build-secrets"]["projected"]["sources"] == [
        {"secret": {"name": "npm", "items": [{"key": "token", "path": "npmrc"}]}}
    ]
    args = build_args(job)
    assert args[args.index("--secret") + 1] == "id=npmrc,src=/run/secrets/build/npmrc"
    assert_never_written(canary, cluster, operator)
    assert_never_written(push_canary, cluster, operator)


async def test_a_build_log_echoing_a_secret_is_scrubbed(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    canary = f"canary-{secrets.token_hex(16)}"
    await cluster.create_secret(NAMESPACE, "npm", {"token": canary.encode()})
    kubelet.plan("leaky", "fail")
    kubelet.failure_log = (
        f"#7 [build 2/3] RUN cat /run/secrets/npmrc\n#7 0.101 {canary}\n" + kubelet.failure_log
    )
    build_secrets = [{"id": "npmrc", "secretRef": {"name": "npm", "key": "token"}}]
    await cluster.create_servicebuild(NAMESPACE, "leaky", spec(oci_registry, "leaky", secrets=build_secrets))

    body = await eventually(lambda: stalled(cluster, "leaky"))
    assert "#7 0.101 ***" in body["status"]["logTail"]
    await eventually(lambda: cluster.events(NAMESPACE, "leaky"))
    # The Pod's termination message holds what BuildKit printed; what the operator writes must not.
    written = json.dumps([body["status"], cluster.all(EVENTS, NAMESPACE), cluster.all(JOBS, NAMESPACE)])
    assert canary not in written + operator.log


async def test_secrets_are_read_from_the_servicebuilds_own_namespace_only(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    await cluster.create_secret("other-team", "npm", {"token": b"theirs"})
    build_secrets = [{"id": "npmrc", "secretRef": {"name": "npm", "key": "token"}}]
    await cluster.create_servicebuild(
        NAMESPACE, "borrow", spec(oci_registry, "borrow", secrets=build_secrets)
    )

    body = await eventually(lambda: stalled(cluster, "borrow"))
    assert condition(body, "Stalled")["reason"] == "SecretNotFound"
    assert jobs_of(cluster, "borrow") == []


async def test_a_new_spec_that_cannot_start_still_stops_the_older_build(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    kubelet.plan("shifty", "hold")
    await cluster.create_servicebuild(NAMESPACE, "shifty", spec(oci_registry, "shifty"))
    old_job = await eventually(lambda: next(iter(kubelet.held), None))

    missing = [{"id": "npmrc", "secretRef": {"name": "absent", "key": "token"}}]
    await cluster.change_spec(NAMESPACE, "shifty", {"secrets": missing})

    await eventually(lambda: stalled(cluster, "shifty"))
    await eventually(lambda: cluster.get(JOBS, NAMESPACE, old_job) is None)


async def test_missing_build_secret_is_stalled_without_a_job(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    build_secrets = [{"id": "npmrc", "secretRef": {"name": "absent", "key": "token"}}]
    await cluster.create_servicebuild(NAMESPACE, "api", spec(oci_registry, "api", secrets=build_secrets))

    await stalled_without_job(cluster, "api", "SecretNotFound", "spec.secrets[0].secretRef")


def git_spec(registry: RunningRegistry, git_server: GitHttpServer, **git: Any) -> dict[str, Any]:
    return {
        "source": {"git": {"url": git_server.url, "authSecret": "git-auth", **git}},
        "output": {
            "image": f"{registry.host}/shop/mono:latest",
            "tags": ["{shortCommit}", "gen-{generation}"],
        },
    }


async def test_git_source_builds_the_commit_its_revision_resolved_to(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    git_server: GitHttpServer,
) -> None:
    assert git_server.token is not None
    await cluster.create_secret(NAMESPACE, "git-auth", {"token": git_server.token.encode()})
    source = {"revision": "feature", "contextDir": "services/cart"}
    await cluster.create_servicebuild(NAMESPACE, "mono", git_spec(oci_registry, git_server, **source))

    body = await eventually(lambda: ready(cluster, "mono"))
    commit = git_server.commits.feature
    assert body["status"]["source"]["commit"] == commit
    [job] = jobs_of(cluster, "mono")
    args = build_args(job)
    assert f"context={git_server.url}#{commit}:services/cart" in args
    assert f"label:org.opencontainers.image.revision={commit}" in args
    assert f"label:org.opencontainers.image.source={git_server.url}" in args
    image = f"{oci_registry.host}/shop/mono"
    assert body["status"]["output"]["tags"] == [f"{image}:latest", f"{image}:{commit[:12]}", f"{image}:gen-1"]
    for tag in ("latest", commit[:12], "gen-1"):
        digest = served(oci_registry, "shop/mono", tag).headers["Docker-Content-Digest"]
        assert digest == body["status"]["output"]["digest"]
    assert "x-access-token" in git_server.usernames, "the operator resolved the revision with the token"
    assert_never_written(git_server.token, cluster, operator)


async def test_git_source_with_a_wrong_token_is_stalled(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    git_server: GitHttpServer,
) -> None:
    await cluster.create_secret(NAMESPACE, "git-auth", {"token": b"not-the-token"})
    await cluster.create_servicebuild(NAMESPACE, "denied", git_spec(oci_registry, git_server))

    await stalled_without_job(cluster, "denied", "GitAuthFailed", "spec.source.git")


async def test_multi_platform_build_records_each_platform(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    platforms = ["linux/amd64", "linux/arm64"]
    await cluster.create_servicebuild(NAMESPACE, "edge", spec(oci_registry, "edge", platforms=platforms))

    body = await eventually(lambda: ready(cluster, "edge"))
    index_response = served(oci_registry, "shop/edge", "1", OCI_INDEX)
    index = index_response.json()
    output = body["status"]["output"]
    assert output["digest"] == index_response.headers["Docker-Content-Digest"]
    expected = {
        f"{entry['platform']['os']}/{entry['platform']['architecture']}": entry["digest"]
        for entry in index["manifests"]
        if entry["platform"]["os"] != "unknown"
    }
    assert {platform["platform"]: platform["digest"] for platform in output["platforms"]} == expected
    for platform in output["platforms"]:
        manifest = served(oci_registry, "shop/edge", platform["digest"]).json()
        size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
        assert platform["sizeBytes"] == size
    assert output["sizeBytes"] == sum(platform["sizeBytes"] for platform in output["platforms"])


async def test_failed_cache_export_keeps_the_build_ready_with_a_warning(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    kubelet.plan("cold", "cache-export-fails")
    await cluster.create_servicebuild(NAMESPACE, "cold", spec(oci_registry, "cold"))

    body = await eventually(lambda: ready(cluster, "cold"))
    cache = condition(body, "CacheExported")
    assert cache is not None
    assert (cache["status"], cache["reason"]) == ("False", "CacheExportFailed")
    assert body["status"]["phase"] == "Succeeded"

    await cluster.change_spec(NAMESPACE, "cold", {"buildArgs": {"WARM": "1"}})
    await eventually(lambda: with_condition(cluster, "cold", "CacheExported", "True"))


async def test_pod_that_never_starts_ends_pending_timeout(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    kubelet.plan("stuck", "stuck")
    await cluster.create_servicebuild(NAMESPACE, "stuck", spec(oci_registry, "stuck", pendingTimeout="3s"))

    body = await eventually(lambda: stalled(cluster, "stuck"))
    stalled_condition = condition(body, "Stalled")
    assert stalled_condition["reason"] == "PendingTimeout"
    assert "ImagePullBackOff" in stalled_condition["message"]
    await eventually(lambda: jobs_of(cluster, "stuck") == [])


async def test_a_build_longer_than_the_pending_timeout_ends_ready(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    kubelet.plan("slow", "hold")
    await cluster.create_servicebuild(NAMESPACE, "slow", spec(oci_registry, "slow", pendingTimeout="1s"))
    job_name = await eventually(lambda: next(iter(kubelet.held), None))
    await eventually(lambda: status_of(cluster, "slow").get("phase") == "Building")
    # The build runs past its pending timeout (whole-second timestamps: more than 2 s to be sure).
    await asyncio.sleep(2.5)

    await kubelet.release(job_name)

    body = await eventually(lambda: ready(cluster, "slow"))
    assert body["status"]["output"]["digest"] == kubelet.pushed[job_name]
    assert [job["metadata"]["name"] for job in jobs_of(cluster, "slow")] == [job_name]


def queued_reason(cluster: Cluster, name: str) -> Any:
    body = with_condition(cluster, name, "Reconciling")
    return body if body and condition(body, "Reconciling")["reason"] == "BuildQueued" else None


async def test_kueue_queue_label_leaves_admission_to_kueue(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    scheduling = {"queueName": "builds", "nodeSelector": {"pool": "builders"}, "priorityClassName": "batch"}
    await cluster.create_servicebuild(NAMESPACE, "queued", spec(oci_registry, "queued", **scheduling))

    job_name = await eventually(lambda: next(iter(kubelet.queued), None))
    body = await eventually(lambda: queued_reason(cluster, "queued"))
    assert body["status"]["phase"] == "Pending"
    # Two resyncs later the operator still has not resumed the Job: admission is Kueue's.
    await after_resyncs(cluster)
    job = cluster.get(JOBS, NAMESPACE, job_name)
    assert job is not None
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "builds"
    pod_spec = job["spec"]["template"]["spec"]
    assert (pod_spec["nodeSelector"], pod_spec["priorityClassName"]) == ({"pool": "builders"}, "batch")

    await kubelet.admit(job_name)
    await eventually(lambda: ready(cluster, "queued"))
    assert [job["metadata"]["name"] for job in jobs_of(cluster, "queued")] == [job_name]


@pytest.mark.parametrize(
    ("builder", "allowed"), [(ALLOWED_BUILDER, True), ("evil.example/buildkit:1", False)]
)
async def test_builder_image_only_from_the_allowlist(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    builder: str,
    allowed: bool,
) -> None:
    await cluster.create_servicebuild(NAMESPACE, "custom", spec(oci_registry, "custom", builderImage=builder))

    if allowed:
        await eventually(lambda: ready(cluster, "custom"))
        [job] = jobs_of(cluster, "custom")
        images = {c["image"] for c in job["spec"]["template"]["spec"]["containers"]}
        assert images == {ALLOWED_BUILDER}
    else:
        await stalled_without_job(cluster, "custom", "InvalidSpec", "spec.builderImage")


async def test_push_to_a_registry_the_namespace_may_not_use_is_stalled(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    elsewhere = {"image": "registry.example.com/shop/exfil:1"}
    await cluster.create_servicebuild(
        NAMESPACE, "exfil", {**spec(oci_registry, "exfil"), "output": elsewhere}
    )

    body = await stalled_without_job(cluster, "exfil", "RegistryNotAllowed", "spec.output.image")
    assert oci_registry.host in condition(body, "Stalled")["message"]
