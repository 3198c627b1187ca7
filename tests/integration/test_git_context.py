"""The git gateway reading a commit's build context from real git servers on loopback
(tests/support/git_server.py), as the Dockerfile rules need it.

We test these aspects:
- over smart HTTP with protocol v2 and `uploadpack.allowFilter`: the context directory's files are those
  `git ls-tree -r` lists, with git's blob ids; only the files the rules read carry content; it takes two
  fetches, the commit's trees (`deepen 1`, `filter blob:none`) then exactly the blobs read, by id, all
  with the token;
- a server that offers no `filter` (git's default), one that speaks only protocol v0/v1, and git:// are
  "not checked" (None) without any fetch asked;
- a wrong token is GitAuthFailed and a commit the server lacks a GitError, neither showing the token.
"""

import re
import secrets

import pytest

from servicebuild.credentials import GitCredentials
from servicebuild.gitremote import GitAuthFailed, GitError, GitRemote
from support.git_server import (
    GitDaemon,
    GitHttpServer,
    GitRepositories,
    create_repository,
    git,
    new_token,
    start_git_server,
)

GIT = GitRemote(timeout=10.0)
FILES = {
    "README.md": "monorepo\n",
    "services/cart/Dockerfile": "FROM node:22-slim\nCOPY . .\n",
    "services/cart/.dockerignore": "node_modules\n",
    "services/cart/.env": "API_KEY=test-only\n",
    "services/cart/.npmrc": "//registry.npmjs.org/:_authToken=test-only\n",
    "services/cart/src/app.js": "console.log(1)\n",
}
READ = {"Dockerfile", ".dockerignore", ".npmrc"}


@pytest.fixture(scope="module")
def repository(git_repositories: GitRepositories) -> tuple[str, str]:
    """A monorepo of its own (name, commit), served by every server of the session."""
    name = f"context-{secrets.token_hex(4)}.git"
    return name, create_repository(git_repositories, name, FILES)


@pytest.fixture(scope="module")
def unfiltered_server(git_repositories: GitRepositories) -> GitHttpServer:
    server = start_git_server(git_repositories, token=new_token(), allow_filter=False)
    yield server  # type: ignore[misc]
    server.stop()


def credentials(server: GitHttpServer) -> GitCredentials:
    assert server.token is not None
    return GitCredentials(username="x-access-token", password=server.token)


def test_the_context_s_files_with_git_s_blob_ids_and_only_what_the_rules_read(
    git_server: GitHttpServer, repository: tuple[str, str]
) -> None:
    name, commit = repository
    fetches_before, requests_before = len(git_server.fetches), len(git_server.usernames)

    context = GIT.context_tree(
        git_server.repository_url(name), commit, credentials(git_server), "services/cart", READ.__contains__
    )

    assert context is not None
    listed = git("ls-tree", "-r", f"{commit}:services/cart", cwd=git_server.repositories.root / name)
    expected = {line.split("\t")[1]: line.split()[2] for line in listed.splitlines()}
    assert dict(context.blob_ids) == expected
    assert context.files == {
        path: FILES[f"services/cart/{path}"].encode() if path in READ else b"" for path in expected
    }
    trees, blobs = git_server.fetches[fetches_before:]
    assert b"deepen 1" in trees
    assert b"filter blob:none" in trees
    wanted = sorted(want.decode() for want in re.findall(rb"want ([0-9a-f]{40})", blobs))
    assert wanted == sorted(expected[path] for path in READ)
    assert b"filter" not in blobs
    assert set(git_server.usernames[requests_before:]) == {"x-access-token"}


def test_a_server_without_filter_is_not_checked_and_asked_for_nothing(
    unfiltered_server: GitHttpServer, repository: tuple[str, str]
) -> None:
    name, commit = repository
    url = unfiltered_server.repository_url(name)
    assert GIT.context_tree(url, commit, credentials(unfiltered_server), None, READ.__contains__) is None
    assert unfiltered_server.fetches == []
    assert unfiltered_server.usernames, "it was asked what it offers"


def test_protocol_v1_and_git_daemon_are_not_checked(
    git_server_anonymous: GitHttpServer, git_daemon: GitDaemon, repository: tuple[str, str]
) -> None:
    name, commit = repository
    requests_before = len(git_server_anonymous.usernames)
    url = git_server_anonymous.repository_url(name)
    assert GIT.context_tree(url, commit, None, None, READ.__contains__) is None
    assert len(git_server_anonymous.usernames) == requests_before + 1, "the ref advertisement only"
    assert GIT.context_tree(git_daemon.repository_url(name), commit, None, None, READ.__contains__) is None


def test_a_wrong_token_and_an_unknown_commit_are_errors_without_the_token(
    git_server: GitHttpServer, repository: tuple[str, str]
) -> None:
    name, commit = repository
    url = git_server.repository_url(name)
    wrong = GitCredentials(username="x-access-token", password=f"wrong-{secrets.token_hex(8)}")
    with pytest.raises(GitAuthFailed) as denied:
        GIT.context_tree(url, commit, wrong, None, READ.__contains__)
    with pytest.raises(GitError) as unknown:
        GIT.context_tree(url, "ab" * 20, credentials(git_server), None, READ.__contains__)
    for error in (denied.value, unknown.value):
        assert str(git_server.token) not in str(error)
        assert wrong.password is not None
        assert wrong.password not in str(error)
        assert url in str(error)
