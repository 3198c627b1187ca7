"""We test these aspects of the operator's own Dockerfile rules on git sources, with the real operator,
KMock's API, a real registry and a real git server (git http-backend, protocol v2, partial clones allowed):

- a repository whose Dockerfile copies `.env` into the image ends Ready with exactly the SecretInImage
  finding at its stage and line, read from the commit the build built; the token is never written;
- with `checks.policy: Fail` it stalls as DockerfileCheckFailed naming the rule and the line, and no Job is
  ever created;
- a git server that refuses partial clones leaves the context unchecked: the build goes on, with no finding
  of the operator's, and the log says why;
- a rebuild (asked for by annotation) after a commit that changes one copied file and one file no step
  copies reports the `COPY` that missed and that file in `status.cache.firstMiss.changedFiles`.
"""

import secrets
from collections.abc import Iterator
from typing import Any

import kmock
import pytest
from cluster import JOBS, SERVICEBUILDS, Cluster, condition, eventually
from helpers import NAMESPACE, ready, stalled, status_of
from kubelet import Kubelet
from operator_process import OperatorProcess
from test_build_inputs import assert_never_written
from test_findings_in_builds import ENV_FILE, where

from servicebuild.naming import ANNOTATION_REQUESTED_AT
from support.git_server import (
    GitHttpServer,
    GitRepositories,
    commit_files,
    create_repository,
    new_token,
    start_git_server,
)
from support.oci_registry import RunningRegistry

GREET = {
    "Dockerfile": """\
FROM gcc:14 AS build
COPY main.c .
RUN cc -o /greet main.c
FROM gcr.io/distroless/static:nonroot
COPY --from=build /greet /greet
""",
    "main.c": "int main(){}\n",
    "README.md": "greet\n",
}


@pytest.fixture
def unfiltered_server(git_repositories: GitRepositories) -> Iterator[GitHttpServer]:
    server = start_git_server(git_repositories, token=new_token(), allow_filter=False)
    yield server
    server.stop()


async def git_build(
    cluster: Cluster,
    registry: RunningRegistry,
    server: GitHttpServer,
    name: str,
    files: dict[str, str],
    **extra: Any,
) -> str:
    """A repository of `files` and the ServiceBuild `name` building it from `services/<name>`; its commit."""
    repository = f"{name}-{secrets.token_hex(4)}.git"
    commit = create_repository(
        server.repositories, repository, {f"services/{name}/{k}": v for k, v in files.items()}
    )
    assert server.token is not None
    await cluster.create_secret(NAMESPACE, f"{name}-git", {"token": server.token.encode()})
    git = {
        "url": server.repository_url(repository),
        "authSecret": f"{name}-git",
        "contextDir": f"services/{name}",
    }
    spec = {
        "source": {"git": {**git, **extra.pop("git", {})}},
        "output": {"image": f"{registry.host}/shop/{name}:1"},
        **extra,
    }
    await cluster.create_servicebuild(NAMESPACE, name, spec)
    return commit


async def test_a_secret_in_a_git_context_is_found_in_the_commit_built(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    git_server: GitHttpServer,
) -> None:
    commit = await git_build(cluster, oci_registry, git_server, "checkout", ENV_FILE)

    body = await eventually(lambda: ready(cluster, "checkout"))

    status = body["status"]
    assert status["source"]["commit"] == commit
    assert where(status) == [("SecretInImage", "error", "stage-1", 8)]
    clean = condition(body, "DockerfileClean")
    assert clean is not None
    assert clean["reason"] == "SecretInImage"
    assert status["output"]["digest"] == kubelet.pushed[status["jobName"]]
    assert git_server.token is not None
    assert_never_written(git_server.token, cluster, operator)
    assert "test-only" not in operator.log, "findings name files, not their content"


async def test_policy_fail_stops_a_secret_in_a_git_context_before_any_job(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    git_server: GitHttpServer,
) -> None:
    await git_build(cluster, oci_registry, git_server, "checkout", ENV_FILE, checks={"policy": "Fail"})

    body = await eventually(lambda: stalled(cluster, "checkout"))

    stalled_condition = condition(body, "Stalled")
    assert stalled_condition is not None
    assert stalled_condition["reason"] == "DockerfileCheckFailed"
    assert "SecretInImage" in stalled_condition["message"]
    assert "Dockerfile line 8" in stalled_condition["message"]
    assert where(body["status"]) == [("SecretInImage", "error", "stage-1", 8)]
    assert cluster.requests(kmock.action.CREATE, JOBS) == []


async def test_a_server_without_partial_clones_leaves_the_context_unchecked(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    unfiltered_server: GitHttpServer,
) -> None:
    await git_build(cluster, oci_registry, unfiltered_server, "checkout", ENV_FILE, checks={"policy": "Fail"})

    body = await eventually(lambda: ready(cluster, "checkout"))

    assert where(body["status"]) == []
    assert unfiltered_server.fetches == []
    await eventually(lambda: "is not checked: its git server offers no blob-less fetch" in operator.log)


async def test_a_rebuild_after_a_one_file_commit_names_the_copy_and_the_file(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    git_server: GitHttpServer,
) -> None:
    copy_sources = "[build 2/3] COPY main.c ."
    kubelet.first_misses["greet"] = copy_sources
    first = await git_build(cluster, oci_registry, git_server, "greet", GREET)
    await eventually(lambda: ready(cluster, "greet"))
    assert status_of(cluster, "greet")["source"]["commit"] == first
    repository = cluster.servicebuild(NAMESPACE, "greet")["spec"]["source"]["git"]["url"].rsplit("/", 1)[1]

    second = commit_files(
        git_server.repositories,
        repository,
        {"services/greet/main.c": "int main(){return 1;}\n", "services/greet/README.md": "greet!\n"},
    )
    rebuild = {"metadata": {"annotations": {ANNOTATION_REQUESTED_AT: "2026-11-30T10:00:00Z"}}}
    await cluster.patch(SERVICEBUILDS, NAMESPACE, "greet", rebuild)

    await eventually(lambda: status_of(cluster, "greet").get("build") == 2 and ready(cluster, "greet"))
    status = status_of(cluster, "greet")
    assert status["source"]["commit"] == second
    assert status["cache"]["firstMiss"] == {"step": copy_sources, "changedFiles": ["main.c"]}
