"""Pytest fixtures for a real OCI registry; load them with `pytest_plugins = ["support.fixtures"]`.

The registries are session-scoped (starting one takes a fraction of a second, but every test
would pay it); tests keep apart by pushing to their own `unique_repository`.
"""

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake_buildctl import install_fake_buildctl
from .git_server import (
    GitDaemon,
    GitHttpServer,
    GitRepositories,
    create_repositories,
    new_token,
    start_git_daemon,
    start_git_server,
)
from .oci_registry import RunningRegistry, start_registry

REGISTRY_USER = ("builder", "push-password-for-tests")
"""The one account of `oci_registry_htpasswd` and `oci_registry_token`."""


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A registry without auth, like a local development registry."""
    registry = start_registry(tmp_path_factory.mktemp("oci-registry"))
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def oci_registry_htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A registry with htpasswd auth: it answers 401 with `WWW-Authenticate: Basic`."""
    registry = start_registry(tmp_path_factory.mktemp("oci-registry-htpasswd"), htpasswd=REGISTRY_USER)
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def oci_registry_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A registry with token auth: it answers 401 with `WWW-Authenticate: Bearer realm=…`."""
    registry = start_registry(
        tmp_path_factory.mktemp("oci-registry-token"), token_users=dict([REGISTRY_USER])
    )
    yield registry
    registry.stop()


@pytest.fixture
def buildctl_plan_dir(tmp_path: Path) -> Path:
    """Where a test plans the stand-in `buildctl`'s builds and reads its calls (`support.fake_buildctl`)."""
    return tmp_path / "buildctl-plan"


@pytest.fixture
def fake_buildctl(tmp_path: Path, buildctl_plan_dir: Path) -> Path:
    """The stand-in `buildctl` of builder pools; its folder goes first on a PATH."""
    return install_fake_buildctl(tmp_path / "buildctl-bin", buildctl_plan_dir)


@pytest.fixture
def unique_repository(request: pytest.FixtureRequest) -> str:
    """A repository name of this test alone, valid in image references (`tests/<name>-<hex>`)."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60].strip("-")
    return f"tests/{name}-{secrets.token_hex(3)}"


# ---------------------------------------------------------------------------------------------
# Git remotes (tests/support/git_server.py): one set of repositories, served three ways.


@pytest.fixture(scope="session")
def git_repositories(tmp_path_factory: pytest.TempPathFactory) -> GitRepositories:
    """`repo.git` (main, feature, release/1.x, tags v1.0 and annotated v1.1) and `empty.git`."""
    return create_repositories(tmp_path_factory.mktemp("git-repositories"))


@pytest.fixture(scope="session")
def git_server(git_repositories: GitRepositories) -> Iterator[GitHttpServer]:
    """Smart HTTP (protocol v2) that needs basic auth with `git_server.token` as the password."""
    server = start_git_server(git_repositories, token=new_token())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def git_server_anonymous(git_repositories: GitRepositories) -> Iterator[GitHttpServer]:
    """Smart HTTP without auth that speaks only protocol v0/v1, like an older git host."""
    server = start_git_server(git_repositories, protocol_v2=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def git_daemon(
    git_repositories: GitRepositories, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GitDaemon]:
    """`git daemon` serving the same repositories anonymously over git://."""
    daemon = start_git_daemon(git_repositories, tmp_path_factory.mktemp("git-daemon"))
    yield daemon
    daemon.stop()
