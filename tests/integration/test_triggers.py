"""We test how builds follow their sources, with the real operator, KMock's API, a real registry and a
real git server (git http-backend):

- a commit pushed to a polled branch is built within a poll interval (seconds here), its commit recorded
  and in its tags; a commit pushed during a build does not interrupt it and is the next build;
- 20 ServiceBuilds polling one repository in one namespace share their lookups; a namespace with other
  credentials never shares one;
- a signed GitHub and a GitLab push start a build at once; a wrongly signed one starts nothing (401), a
  replayed delivery nothing twice;
- a new digest pushed under a base image's tag rebuilds the ServiceBuilds following their base images
  that use it, and no other;
- the rebuild annotation rebuilds after a permanent failure;
- history keeps its order and limit; Jobs beyond the Job history limits are deleted.
"""

import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from cluster import JOBS, Cluster, eventually
from helpers import NAMESPACE, build_context_fixture, ready, spec, stalled, status_of
from kubelet import Kubelet
from operator_process import OperatorProcess

from support.git_server import GitHttpServer, push_commit
from support.oci_registry import RunningRegistry, free_port, push_image, tag_digest, tar_gz

WEBHOOK_SECRET = "it-is-a-webhook-secret"  # noqa: S105 - the test's own webhook secret

build_context = build_context_fixture({"Dockerfile": "FROM scratch\n"})


@pytest.fixture
def operator_env(operator_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(WEBHOOK_SECRET)
    return {
        **operator_env,
        "SERVICEBUILD_MIN_POLL_INTERVAL": "1s",
        "SERVICEBUILD_BASE_IMAGE_POLL_INTERVAL": "2s",
        "SERVICEBUILD_WEBHOOK_ADDRESS": f"127.0.0.1:{free_port()}",
        "SERVICEBUILD_WEBHOOK_SECRET_FILE": str(secret_file),
        "SERVICEBUILD_SUCCESSFUL_JOBS_HISTORY_LIMIT": "1",
        "SERVICEBUILD_FAILED_JOBS_HISTORY_LIMIT": "1",
    }


def new_branch() -> str:
    """A branch of this test alone in the shared repository."""
    return f"follow-{secrets.token_hex(4)}"


async def git_auth(cluster: Cluster, git_server: GitHttpServer, namespace: str, username: str) -> None:
    assert git_server.token is not None
    credentials = {"username": username.encode(), "password": git_server.token.encode()}
    await cluster.create_secret(namespace, "git-auth", credentials)


def following(
    registry: RunningRegistry, git_server: GitHttpServer, name: str, branch: str, **git: Any
) -> dict[str, Any]:
    return {
        "source": {"git": {"url": git_server.url, "revision": branch, "authSecret": "git-auth", **git}},
        "output": {"image": f"{registry.host}/shop/{name}:latest", "tags": ["{shortCommit}", "b{build}"]},
    }


def build_of(cluster: Cluster, name: str, number: int, namespace: str = NAMESPACE) -> dict[str, Any] | None:
    body = cluster.servicebuild(namespace, name)
    status = body.get("status", {})
    ready_now = ready(cluster, name) if namespace == NAMESPACE else body
    return (
        body if ready_now and status.get("build") == number and status.get("phase") == "Succeeded" else None
    )


async def test_a_pushed_commit_is_built_within_a_poll_interval(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    git_server: GitHttpServer,
) -> None:
    branch = new_branch()
    first = push_commit(git_server.repositories, branch, "one")
    await git_auth(cluster, git_server, NAMESPACE, "ci")
    await cluster.create_servicebuild(
        NAMESPACE, "api", following(oci_registry, git_server, "api", branch, pollInterval="1s")
    )
    body = await eventually(lambda: build_of(cluster, "api", 1))
    assert body["status"]["source"]["commit"] == first

    second = push_commit(git_server.repositories, branch, "two")
    body = await eventually(lambda: build_of(cluster, "api", 2))
    assert body["status"]["source"]["commit"] == second
    assert body["status"]["trigger"] == "NewCommit"
    digest = body["status"]["output"]["digest"]
    assert tag_digest(oci_registry, "shop/api", second[:12]) == digest
    assert tag_digest(oci_registry, "shop/api", "b2") == digest
    assert [record["build"] for record in body["status"]["history"]] == [2, 1]


async def test_a_commit_during_a_build_is_the_next_build(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    git_server: GitHttpServer,
) -> None:
    branch = new_branch()
    push_commit(git_server.repositories, branch, "one")
    await git_auth(cluster, git_server, NAMESPACE, "ci")
    kubelet.plan("api", "hold")
    await cluster.create_servicebuild(
        NAMESPACE, "api", following(oci_registry, git_server, "api", branch, pollInterval="1s")
    )
    job_name = await eventually(lambda: next(iter(kubelet.held), None))

    second = push_commit(git_server.repositories, branch, "two")
    lookups = len(git_server.lookups)
    await eventually(lambda: len(git_server.lookups) >= lookups + 2)  # it looked, twice, and saw `two`
    assert list(kubelet.held) == [job_name], "the running build goes on"
    assert len(cluster.all(JOBS, NAMESPACE)) == 1

    await kubelet.release(job_name)
    body = await eventually(lambda: build_of(cluster, "api", 2))
    assert body["status"]["source"]["commit"] == second
    assert [record["result"] for record in body["status"]["history"]] == ["Succeeded", "Succeeded"]


async def test_servicebuilds_polling_one_repository_share_lookups_within_a_namespace_only(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    git_server: GitHttpServer,
) -> None:
    branch = new_branch()
    push_commit(git_server.repositories, branch, "one")
    await git_auth(cluster, git_server, NAMESPACE, "shop-ci")
    await git_auth(cluster, git_server, "payments", "payments-ci")
    names = [f"svc-{index}" for index in range(20)]
    # Polled hourly: within this test, each lookup key is looked up once. The builds run on (held): the
    # lookups are done when every build has its Job.
    for name in [*names, "ledger"]:
        kubelet.plan(name, "hold")
    for name in names:
        await cluster.create_servicebuild(
            NAMESPACE, name, following(oci_registry, git_server, name, branch, pollInterval="1h")
        )
    await cluster.create_servicebuild(
        "payments", "ledger", following(oci_registry, git_server, "ledger", branch, pollInterval="1h")
    )
    await eventually(lambda: len(kubelet.held) == len(names) + 1, within=120)

    # The operator's reads of the commit's context (for the Dockerfile rules) list refs as fetches do.
    resolved = {
        user: git_server.lookups.count(user) - git_server.fetchers.count(user)
        for user in ("shop-ci", "payments-ci")
    }
    assert resolved["shop-ci"] == 1, "the twenty of one namespace shared one lookup"
    assert resolved["payments-ci"] == 1, "another namespace's credentials looked up for themselves"
    assert git_server.fetchers.count("shop-ci") == 2, "and one read of the context: trees, then blobs"


def github_delivery(
    git_server: GitHttpServer, branch: str, commit: str, secret: str
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "ref": f"refs/heads/{branch}",
            "after": commit,
            "repository": {"full_name": "shop/repo", "clone_url": git_server.url, "default_branch": "main"},
        }
    ).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": secrets.token_hex(8),
        "X-Hub-Signature-256": signature,
    }
    return body, headers


def gitlab_delivery(
    git_server: GitHttpServer, branch: str, commit: str, token: str
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "object_kind": "push",
            "ref": f"refs/heads/{branch}",
            "after": commit,
            "project": {
                "path_with_namespace": "shop/repo",
                "git_http_url": git_server.url,
                "default_branch": "main",
            },
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Gitlab-Event": "Push Hook",
        "X-Gitlab-Token": token,
        "Idempotency-Key": secrets.token_hex(8),
    }
    return body, headers


async def test_signed_pushes_start_a_build_at_once_and_nothing_else_does(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    operator_env: dict[str, str],
    oci_registry: RunningRegistry,
    git_server: GitHttpServer,
) -> None:
    branch = new_branch()
    push_commit(git_server.repositories, branch, "one")
    await git_auth(cluster, git_server, NAMESPACE, "ci")
    # Polled once an hour: only a push makes it look again.
    await cluster.create_servicebuild(
        NAMESPACE, "api", following(oci_registry, git_server, "api", branch, pollInterval="1h")
    )
    await eventually(lambda: build_of(cluster, "api", 1))
    receiver = f"http://{operator_env['SERVICEBUILD_WEBHOOK_ADDRESS']}"

    async with httpx.AsyncClient(base_url=receiver, timeout=10) as client:
        second = push_commit(git_server.repositories, branch, "two")
        wrong_body, wrong_headers = github_delivery(git_server, branch, second, "not-the-secret")
        assert (
            await client.post("/hooks/github", content=wrong_body, headers=wrong_headers)
        ).status_code == 401
        body, headers = github_delivery(git_server, branch, second, WEBHOOK_SECRET)
        answer = await client.post("/hooks/github", content=body, headers=headers)
        assert (answer.status_code, answer.json()["result"]) == (202, "triggered"), answer.text
        built = await eventually(lambda: build_of(cluster, "api", 2))
        assert built["status"]["source"]["commit"] == second

        replay = await client.post("/hooks/github", content=body, headers=headers)
        assert (replay.status_code, replay.json()["result"]) == (202, "duplicate")

        third = push_commit(git_server.repositories, branch, "three")
        body, headers = gitlab_delivery(git_server, branch, third, WEBHOOK_SECRET)
        answer = await client.post("/hooks/gitlab", content=body, headers=headers)
        assert (answer.status_code, answer.json()["result"]) == (202, "triggered"), answer.text
        built = await eventually(lambda: build_of(cluster, "api", 3))
        assert built["status"]["source"]["commit"] == third
    assert status_of(cluster, "api")["build"] == 3


async def test_a_new_base_image_rebuilds_who_follows_it_and_no_other(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    base = f"tests/base-{secrets.token_hex(3)}"
    other = f"tests/other-{secrets.token_hex(3)}"
    for repository in (base, other):
        push_image(oci_registry, repository, "1", [tar_gz({"etc/os": b"v1"})])
    contexts = {"on-base": base, "on-other": other}
    for name, repository in contexts.items():
        await cluster.create_configmap(
            NAMESPACE, name, {"Dockerfile": f"FROM {oci_registry.host}/{repository}:1\n"}
        )
    builds = {
        "follows": ("on-base", True),
        "ignores": ("on-base", False),
        "follows-other": ("on-other", True),
    }
    for name, (context, follows) in builds.items():
        extra = {"triggers": {"baseImages": True}} if follows else {}
        await cluster.create_servicebuild(NAMESPACE, name, spec(oci_registry, name, context=context, **extra))
    for name in builds:
        body = await eventually(lambda name=name: build_of(cluster, name, 1))
        [used] = body["status"]["baseImages"]
        assert used["ref"] == f"{oci_registry.host}/{contexts[builds[name][0]]}:1"

    push_image(oci_registry, base, "1", [tar_gz({"etc/os": b"v2, patched"})])
    body = await eventually(lambda: build_of(cluster, "follows", 2))
    assert body["status"]["trigger"] == "BaseImageChanged"
    assert body["status"]["baseImages"][0]["digest"] == tag_digest(oci_registry, base, "1")
    assert status_of(cluster, "ignores")["build"] == 1
    assert status_of(cluster, "follows-other")["build"] == 1


async def test_a_rebuild_request_rebuilds_after_a_permanent_failure_and_jobs_follow_the_limits(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    kubelet.plan("cart", "fail")
    await cluster.create_servicebuild(NAMESPACE, "cart", spec(oci_registry, "cart", historyLimit=2))
    await eventually(lambda: stalled(cluster, "cart"))

    for number, request in enumerate(("first", "second", "third"), start=2):
        await cluster.patch_metadata(
            NAMESPACE, "cart", {"annotations": {"servicebuild.dev/requested-at": request}}
        )
        body = await eventually(lambda number=number: build_of(cluster, "cart", number))
        assert body["status"]["lastHandledRequest"] == request
        assert body["status"]["trigger"] == "Requested"

    history = body["status"]["history"]
    assert [(record["build"], record["result"]) for record in history] == [(4, "Succeeded"), (3, "Succeeded")]
    # One successful and one failed Job kept: the Job controller finishes the last one seconds after Ready.
    await eventually(lambda: len(cluster.all(JOBS, NAMESPACE)) == 2)
    kept = sorted(
        job["metadata"]["annotations"]["servicebuild.dev/build"] for job in cluster.all(JOBS, NAMESPACE)
    )
    assert kept == ["1", "4"]
