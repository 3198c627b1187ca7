"""We test these aspects of Dockerfile findings, with the real operator, KMock's API and a real registry:

- three ConfigMap contexts with one classic pitfall each end Ready with their image pushed and exactly
  that finding, at the right stage and line, and DockerfileClean=False naming it: the final stage copies a
  build stage's whole WORKDIR; `COPY . .` comes before `npm ci` while `package.json` is in the context;
  `.env` is copied into the image;
- with `checks.policy: Fail` the `.env` context stalls as DockerfileCheckFailed naming the rule and the
  line, and no Job is ever created (the API server's request log has no create of a Job);
- BuildKit's own build checks reach the status from the build's report (the stand-in reports
  FromAsCasing as BuildKit does), and `checks.skip` reaches BuildKit as BUILDKIT_DOCKERFILE_CHECK.
"""

import functools
from typing import Any

import helpers
import kmock
from cluster import JOBS, Cluster, condition, eventually
from helpers import NAMESPACE, ready, stalled, status_of
from kubelet import Kubelet, build_args
from operator_process import OperatorProcess

from support.oci_registry import RunningRegistry

BUILD_TREE = {
    "Dockerfile": """\
FROM node:22 AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY . .
RUN npm run build

FROM node:22-slim
WORKDIR /app
COPY --from=build /app /app
USER node
CMD ["node", "dist/server.js"]
""",
    ".dockerignore": "node_modules\ndist\n",
    "package.json": '{"name": "web", "scripts": {"build": "tsc"}}',
    "package-lock.json": "{}",
    "server.ts": "export {};\n",
}
COPY_ALL_FIRST = {
    "Dockerfile": """\
FROM node:22-slim
WORKDIR /app
COPY . .
RUN npm ci --omit=dev
USER node
CMD ["node", "server.js"]
""",
    "package.json": '{"name": "cart"}',
    "package-lock.json": "{}",
    "server.js": "require('http').createServer().listen(8080);\n",
}
ENV_FILE = {
    "Dockerfile": """\
FROM golang:1.22 AS build
WORKDIR /src
COPY go.mod main.go ./
RUN go build -o /out/app .

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/app /app
COPY .env /etc/app/.env
ENTRYPOINT ["/app"]
""",
    "go.mod": "module example.com/checkout\n\ngo 1.22\n",
    "main.go": "package main\n\nfunc main() {}\n",
    ".env": "PAYMENT_API_KEY=test-only\n",
}
CASING = {"Dockerfile": "FROM scratch as app\nCOPY a /a\nUSER 10001\n", "a": "1"}


async def built_with_findings(
    cluster: Cluster,
    kubelet: Kubelet,
    registry: RunningRegistry,
    name: str,
    files: dict[str, str],
    **extra: Any,
) -> dict[str, Any]:
    """Build `files` as ServiceBuild `name`; its status once Ready, with the image it pushed checked."""
    await cluster.create_configmap(NAMESPACE, f"{name}-context", files)
    await cluster.create_servicebuild(
        NAMESPACE, name, helpers.spec(registry, name, context=f"{name}-context", **extra)
    )
    body = await eventually(functools.partial(ready, cluster, name))
    status: dict[str, Any] = body["status"]
    assert status["output"]["digest"] == kubelet.pushed[status["jobName"]]
    return status


def where(status: dict[str, Any]) -> list[tuple[str, str, str | None, int | None]]:
    return [(f["rule"], f["severity"], f.get("stage"), f.get("line")) for f in status.get("findings", [])]


def dockerfile_clean(status: dict[str, Any]) -> tuple[str, str]:
    found = condition({"status": status}, "DockerfileClean")
    assert found is not None
    return found["status"], found["reason"]


async def test_each_pitfall_ends_with_its_finding_and_an_image(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    tree = await built_with_findings(cluster, kubelet, oci_registry, "web", BUILD_TREE)
    assert where(tree) == [("FinalStageCopiesBuildTree", "warning", "stage-1", 10)]
    assert "`/app`, stage `build`'s WORKDIR" in tree["findings"][0]["message"]
    assert dockerfile_clean(tree) == ("False", "FinalStageCopiesBuildTree")

    order = await built_with_findings(cluster, kubelet, oci_registry, "cart", COPY_ALL_FIRST)
    assert where(order) == [("CopyAllBeforeDependencies", "warning", "stage-0", 3)]
    assert "Copy `package.json`, `package-lock.json` first" in order["findings"][0]["message"]

    secret = await built_with_findings(cluster, kubelet, oci_registry, "checkout", ENV_FILE)
    assert where(secret) == [("SecretInImage", "error", "stage-1", 8)]
    assert dockerfile_clean(secret) == ("False", "SecretInImage")
    assert condition({"status": secret}, "Ready")["reason"] == "BuildSucceeded", "Warn never fails"


async def test_policy_fail_stops_a_secret_before_any_job(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    await cluster.create_configmap(NAMESPACE, "checkout-context", ENV_FILE)
    spec = helpers.spec(oci_registry, "checkout", context="checkout-context", checks={"policy": "Fail"})
    await cluster.create_servicebuild(NAMESPACE, "checkout", spec)

    body = await eventually(lambda: stalled(cluster, "checkout"))

    stalled_condition = condition(body, "Stalled")
    assert stalled_condition is not None
    assert stalled_condition["reason"] == "DockerfileCheckFailed"
    assert "SecretInImage" in stalled_condition["message"]
    assert "Dockerfile line 8" in stalled_condition["message"]
    assert where(body["status"]) == [("SecretInImage", "error", "stage-1", 8)]
    assert cluster.requests(kmock.action.CREATE, JOBS) == []
    assert cluster.all(JOBS, NAMESPACE) == []


async def test_buildkit_checks_are_findings_and_skip_reaches_buildkit(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    casing = await built_with_findings(cluster, kubelet, oci_registry, "casing", CASING)
    assert where(casing) == [("FromAsCasing", "warning", None, 1)]
    assert casing["findings"][0]["message"] == (
        "'as' and 'FROM' keywords' casing do not match. "
        "See https://docs.docker.com/go/dockerfile/rule/from-as-casing/"
    )

    skip = {"skip": ["FromAsCasing"]}
    skipped = await built_with_findings(cluster, kubelet, oci_registry, "skipped", CASING, checks=skip)
    assert "findings" not in skipped
    assert dockerfile_clean(skipped) == ("True", "NoFindings")
    job = cluster.get(JOBS, NAMESPACE, skipped["jobName"])
    assert job is not None
    assert "build-arg:BUILDKIT_DOCKERFILE_CHECK=skip=FromAsCasing" in build_args(job)
    assert status_of(cluster, "casing")["findings"] == casing["findings"], "each ServiceBuild its own"
