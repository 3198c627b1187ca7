"""We test these aspects of a git source's Job, asserted directly:

- no init container and no workspace; the context pinned to the resolved commit (else the revision),
  with the context folder; the OCI source and revision labels, the source without user information;
- the host-scoped `GIT_AUTH_TOKEN.<host>` secret with a token or password, the `default` SSH key with
  only the private key mounted, and no auth at all for a public repository.
"""

from typing import Any

import pytest

from servicebuild.api.models import ServiceBuild
from servicebuild.render.job import BuildInputs, buildctl_args, render_job
from support.render import (
    CASES,
    COMMIT,
    GIT_URL,
    INPUTS,
    SSH_URL,
    TIMESTAMP,
    build_container,
    flag_values,
    servicebuild,
    settings,
)

# Git sources


def git_build(**git: Any) -> ServiceBuild:
    git.setdefault("url", GIT_URL)
    return servicebuild(source={"git": git})


def test_a_git_build_has_no_init_container_and_no_workspace() -> None:
    job = render_job(*CASES["git-token"])
    pod = job["spec"]["template"]["spec"]
    container = build_container(job)
    assert "initContainers" not in pod
    assert {volume["name"] for volume in pod["volumes"]} == {"buildkitd", "docker-config", "git-auth"}
    assert "/workspace" not in {mount["mountPath"] for mount in container["volumeMounts"]}
    assert not flag_values(container["args"], "--local")


def test_a_git_build_fetches_the_resolved_commit_with_the_token() -> None:
    args = build_container(render_job(*CASES["git-token"]))["args"]
    assert flag_values(args, "--opt") == [
        f"context={GIT_URL}#{COMMIT}:services/checkout",
        "filename=build/Dockerfile",
        f"label:org.opencontainers.image.source={GIT_URL}",
        f"label:org.opencontainers.image.revision={COMMIT}",
        "attest:provenance=mode=min",
    ]
    assert flag_values(args, "--secret") == ["id=GIT_AUTH_TOKEN.git.example.com,src=/run/secrets/git/token"]
    assert not flag_values(args, "--ssh")


@pytest.mark.parametrize(
    ("git", "commit", "context"),
    [
        pytest.param({"revision": "main"}, COMMIT, f"{GIT_URL}#{COMMIT}", id="the resolved commit wins"),
        pytest.param({"revision": "main"}, None, f"{GIT_URL}#main", id="unresolved: the revision"),
        pytest.param({"contextDir": "svc/a"}, None, f"{GIT_URL}#:svc/a", id="default branch, a folder"),
        pytest.param({}, None, GIT_URL, id="default branch, the root"),
        pytest.param({"url": GIT_URL + "/"}, None, GIT_URL, id="trailing slash dropped"),
        pytest.param(
            {"url": "ssh://git@git.example.com:2222/shop/monorepo.git", "contextDir": "svc"},
            COMMIT,
            f"ssh://git@git.example.com:2222/shop/monorepo.git#{COMMIT}:svc",
            id="ssh URL kept as given",
        ),
    ],
)
def test_git_context_reference(git: dict[str, str], commit: str | None, context: str) -> None:
    inputs = BuildInputs(timestamp=TIMESTAMP, commit=commit)
    opts = flag_values(buildctl_args(git_build(**git).spec, settings(), inputs, generation=3), "--opt")
    assert opts[0] == f"context={context}"
    revisions = [opt for opt in opts if opt.startswith("label:org.opencontainers.image.revision=")]
    assert revisions == ([f"label:org.opencontainers.image.revision={commit}"] if commit else [])


@pytest.mark.parametrize(
    ("url", "source"),
    [
        pytest.param(GIT_URL, GIT_URL, id="https"),
        pytest.param(GIT_URL + "/", GIT_URL, id="https with trailing slash"),
        pytest.param(
            "ssh://deploy:hunter2@git.example.com:2222/shop/r.git",
            "ssh://git.example.com:2222/shop/r.git",
            id="ssh",
        ),
        pytest.param(
            "git://git.example.com/shop/r.git", "git://git.example.com/shop/r.git", id="git protocol"
        ),
        pytest.param(SSH_URL, "ssh://git.example.com/shop/monorepo.git", id="scp-style"),
    ],
)
def test_the_source_label_carries_no_user_information(url: str, source: str) -> None:
    opts = flag_values(buildctl_args(git_build(url=url).spec, settings(), INPUTS, generation=3), "--opt")
    assert f"label:org.opencontainers.image.source={source}" in opts
    assert "hunter2" not in " ".join(opt for opt in opts if opt.startswith("label:"))


@pytest.mark.parametrize(
    ("url", "host"),
    [
        pytest.param(GIT_URL, "git.example.com", id="host"),
        pytest.param("https://git.example.com:8443/shop/r.git", "git.example.com:8443", id="host with port"),
        pytest.param("http://10.0.0.7:3000/shop/r.git", "10.0.0.7:3000", id="plain HTTP"),
    ],
)
def test_the_token_secret_is_scoped_to_the_repository_host(url: str, host: str) -> None:
    inputs = BuildInputs(timestamp=TIMESTAMP, commit=COMMIT, git_auth="password")
    build = git_build(url=url, authSecret="git-creds")
    args = buildctl_args(build.spec, settings(), inputs, generation=3)
    assert flag_values(args, "--secret") == [f"id=GIT_AUTH_TOKEN.{host},src=/run/secrets/git/password"]
    pod = render_job(build, settings(), inputs)["spec"]["template"]["spec"]
    assert {
        "name": "git-auth",
        "secret": {"secretName": "git-creds", "items": [{"key": "password", "path": "password"}]},
    } in pod["volumes"]


def test_a_git_ssh_build_forwards_only_the_private_key() -> None:
    job = render_job(*CASES["git-ssh"])
    pod = job["spec"]["template"]["spec"]
    container = build_container(job)
    assert flag_values(container["args"], "--ssh") == ["default=/run/secrets/git/ssh-privatekey"]
    assert not flag_values(container["args"], "--secret")
    # Only the key is mounted: a known_hosts key of the Secret is ignored, as BuildKit takes none for a
    # context given by --opt context.
    assert {
        "name": "git-auth",
        "secret": {
            "secretName": "git-deploy-key",
            "items": [{"key": "ssh-privatekey", "path": "ssh-privatekey"}],
        },
    } in pod["volumes"]
    assert {"name": "git-auth", "mountPath": "/run/secrets/git", "readOnly": True} in container[
        "volumeMounts"
    ]


def test_a_public_git_build_mounts_no_auth() -> None:
    job = render_job(*CASES["tags"])
    assert [volume["name"] for volume in job["spec"]["template"]["spec"]["volumes"]] == ["buildkitd"]
    assert not flag_values(build_container(job)["args"], "--secret")
