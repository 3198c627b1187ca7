"""The git gateway against real git servers on loopback (tests/support/git_server.py).

We test these aspects:
- over smart HTTP with token auth (protocol v2), smart HTTP without auth (protocol v0/v1) and
  git:// (git daemon): the default branch (HEAD), a branch, a branch with a slash, a lightweight
  tag, an annotated tag (the peeled commit, never the tag object) and a full ref name resolve to
  what `git rev-parse` says;
- a full commit id is returned as is, without asking the server (so even one it lacks);
- an unknown revision is a permanent RevisionNotFound (reason SourceNotFound) naming the revision,
  with a hint for an abbreviated commit id; an empty repository's HEAD is RevisionNotFound too;
- an unknown repository is a permanent SourceNotFound (HTTP 404, git daemon's error line);
- a wrong token, no credentials, credentials written into the URL (never sent, never shown) and
  an HTTP 403 are a permanent GitAuthFailed whose message holds no secret;
- credentials from a Secret's data: a bare token goes out with the username `x-access-token`,
  basic-auth with its own username; an SSH-key-only secret for an HTTP URL is InvalidGitSecret;
- a stopped server (HTTP and git://), HTTP 503 and 429, and a server that accepts the connection
  but never answers (the timeout holds) are a transient GitUnavailable;
- an HTTP server answering 200 with a page that is no git ref list (a sign-on proxy) is a permanent
  GitError, never read as refs; a renamed repository's redirect is followed, with the credentials,
  but a redirect to another host gets none of them (dulwich 1.2.6 and later).
"""

import base64
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servicebuild.credentials import GitCredentials, git_credentials_from_secret
from servicebuild.gitremote import (
    GitAuthFailed,
    GitError,
    GitRemote,
    GitUnavailable,
    InvalidGitSecret,
    RevisionNotFound,
    SourceNotFound,
)
from support.git_server import (
    ANNOTATED_TAG,
    BRANCH,
    EMPTY_REPOSITORY,
    LIGHTWEIGHT_TAG,
    NESTED_BRANCH,
    GitDaemon,
    GitHttpServer,
    GitRepositories,
    RepoCommits,
    new_token,
    start_git_daemon,
    start_git_server,
)

GIT = GitRemote(timeout=10.0)


@dataclass(frozen=True)
class Remote:
    """One way of reaching the test repositories, with what it needs to get in."""

    base_url: str
    credentials: GitCredentials | None
    commits: RepoCommits

    @property
    def url(self) -> str:
        return f"{self.base_url}/repo.git"

    def resolve(self, revision: str | None, name: str = "repo.git") -> str:
        return GIT.resolve(f"{self.base_url}/{name}", revision, self.credentials)


def token_credentials(server: GitHttpServer) -> GitCredentials:
    assert server.token is not None
    return GitCredentials(username="x-access-token", password=server.token)


@pytest.fixture(params=["http-token-v2", "http-anonymous-v1", "git-daemon"])
def remote(request: pytest.FixtureRequest) -> Remote:
    if request.param == "http-token-v2":
        server: GitHttpServer = request.getfixturevalue("git_server")
        return Remote(server.base_url, token_credentials(server), server.commits)
    if request.param == "http-anonymous-v1":
        anonymous: GitHttpServer = request.getfixturevalue("git_server_anonymous")
        return Remote(anonymous.base_url, None, anonymous.commits)
    daemon: GitDaemon = request.getfixturevalue("git_daemon")
    return Remote(daemon.base_url, None, daemon.commits)


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


# ---------------------------------------------------------------------------------------------
# Resolution, compared with git rev-parse


def test_no_revision_is_the_default_branch(remote: Remote) -> None:
    assert remote.resolve(None) == remote.commits.main
    assert remote.resolve("HEAD") == remote.commits.main


def test_branches(remote: Remote) -> None:
    assert remote.resolve("main") == remote.commits.main
    assert remote.resolve(BRANCH) == remote.commits.feature
    assert remote.resolve(NESTED_BRANCH) == remote.commits.first


def test_lightweight_tag(remote: Remote) -> None:
    assert remote.resolve(LIGHTWEIGHT_TAG) == remote.commits.first


def test_annotated_tag_is_peeled_to_its_commit(remote: Remote) -> None:
    commit = remote.resolve(ANNOTATED_TAG)
    assert commit == remote.commits.feature
    assert commit != remote.commits.annotated_tag_object


def test_full_ref_names(remote: Remote) -> None:
    assert remote.resolve(f"refs/heads/{BRANCH}") == remote.commits.feature
    assert remote.resolve(f"refs/tags/{ANNOTATED_TAG}") == remote.commits.feature


def test_full_commit_id_is_returned_without_asking(git_server: GitHttpServer) -> None:
    requests_before = len(git_server.usernames)
    credentials = token_credentials(git_server)
    assert GIT.resolve(git_server.url, git_server.commits.first, credentials) == git_server.commits.first
    assert GIT.resolve(git_server.url, git_server.commits.first.upper(), None) == git_server.commits.first
    # Not in the repository at all, and still returned: only the build can tell.
    assert GIT.resolve(git_server.url, "ab" * 20, credentials) == "ab" * 20
    assert len(git_server.usernames) == requests_before


# ---------------------------------------------------------------------------------------------
# Not found


def test_unknown_revision(remote: Remote) -> None:
    with pytest.raises(RevisionNotFound) as caught:
        remote.resolve("no-such-branch")
    assert caught.value.reason == "SourceNotFound"
    assert not caught.value.transient
    assert "'no-such-branch'" in str(caught.value)
    assert remote.url in str(caught.value)


def test_abbreviated_commit_id_gets_a_hint(remote: Remote) -> None:
    with pytest.raises(RevisionNotFound, match="abbreviated commit ids"):
        remote.resolve(remote.commits.first[:12])


def test_empty_repository_has_no_head(remote: Remote) -> None:
    with pytest.raises(RevisionNotFound, match="unborn"):
        remote.resolve(None, EMPTY_REPOSITORY)


def test_unknown_repository(remote: Remote) -> None:
    with pytest.raises(SourceNotFound) as caught:
        remote.resolve(None, "no-such-repo.git")
    assert type(caught.value) is SourceNotFound
    assert caught.value.reason == "SourceNotFound"
    assert not caught.value.transient
    assert "no-such-repo.git" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# Credentials


def test_wrong_token(git_server: GitHttpServer) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    with pytest.raises(GitAuthFailed) as caught:
        GIT.resolve(git_server.url, None, GitCredentials(username="x-access-token", password=wrong))
    error = caught.value
    assert error.reason == "GitAuthFailed"
    assert not error.transient
    assert "rejected" in str(error)
    assert git_server.url in str(error)
    for text in (str(error), repr(error)):
        assert wrong not in text
        assert str(git_server.token) not in text


def test_no_credentials(git_server: GitHttpServer) -> None:
    with pytest.raises(GitAuthFailed, match="no auth secret") as caught:
        GIT.resolve(git_server.url, "main", None)
    assert not caught.value.transient


def test_credentials_in_the_url_are_neither_sent_nor_shown(git_server: GitHttpServer) -> None:
    assert git_server.token is not None
    url = git_server.url.replace("http://", f"http://x-access-token:{git_server.token}@")
    with pytest.raises(GitAuthFailed) as caught:
        GIT.resolve(url, None, None)
    assert git_server.token not in str(caught.value)
    assert git_server.url in str(caught.value)


def test_forbidden(git_repositories: GitRepositories) -> None:
    server = start_git_server(git_repositories, token=new_token())
    server.answer_status = 403
    try:
        with pytest.raises(GitAuthFailed, match="HTTP 403") as caught:
            GIT.resolve(server.url, None, token_credentials(server))
    finally:
        server.stop()
    assert str(server.token) not in str(caught.value)


def test_token_from_secret_data_goes_out_as_x_access_token(git_server: GitHttpServer) -> None:
    assert git_server.token is not None
    credentials = git_credentials_from_secret({"token": b64(git_server.token + "\n")})
    requests_before = len(git_server.usernames)
    assert GIT.resolve(git_server.url, BRANCH, credentials) == git_server.commits.feature
    assert set(git_server.usernames[requests_before:]) == {"x-access-token"}


def test_basic_auth_secret_data_keeps_its_username(git_server: GitHttpServer) -> None:
    assert git_server.token is not None
    credentials = git_credentials_from_secret({"username": b64("builder"), "password": b64(git_server.token)})
    requests_before = len(git_server.usernames)
    assert GIT.resolve(git_server.url, None, credentials) == git_server.commits.main
    assert set(git_server.usernames[requests_before:]) == {"builder"}


def test_ssh_key_only_secret_for_an_http_url(git_server: GitHttpServer) -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0\n-----END OPENSSH PRIVATE KEY-----\n"
    with pytest.raises(InvalidGitSecret, match="'token' or 'password'") as caught:
        GIT.resolve(git_server.url, None, GitCredentials(ssh_private_key=key))
    assert "c2VjcmV0" not in str(caught.value)


# ---------------------------------------------------------------------------------------------
# Outages


def assert_unavailable(error: GitError, url: str) -> None:
    assert isinstance(error, GitUnavailable)
    assert error.transient
    assert error.reason == "GitUnavailable"
    assert url in str(error)


def test_stopped_http_server(git_repositories: GitRepositories) -> None:
    server = start_git_server(git_repositories, token=new_token())
    credentials = token_credentials(server)
    assert GIT.resolve(server.url, None, credentials) == git_repositories.commits.main
    server.stop()
    with pytest.raises(GitUnavailable) as caught:
        GIT.resolve(server.url, None, credentials)
    assert_unavailable(caught.value, server.url)
    assert str(server.token) not in str(caught.value)


def test_stopped_git_daemon(git_repositories: GitRepositories, tmp_path: Path) -> None:
    daemon = start_git_daemon(git_repositories, tmp_path)
    assert GIT.resolve(daemon.url, None, None) == git_repositories.commits.main
    daemon.stop()
    with pytest.raises(GitUnavailable) as caught:
        GIT.resolve(daemon.url, None, None)
    assert_unavailable(caught.value, daemon.url)


@pytest.mark.parametrize("status", [503, 429, 500])
def test_server_errors_are_transient(git_repositories: GitRepositories, status: int) -> None:
    server = start_git_server(git_repositories)
    server.answer_status = status
    try:
        with pytest.raises(GitUnavailable, match=f"HTTP {status}") as caught:
            GIT.resolve(server.url, "main", None)
    finally:
        server.stop()
    assert_unavailable(caught.value, server.url)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose connections the kernel accepts and nobody ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


@pytest.mark.parametrize("scheme", ["http", "git"])
def test_a_server_that_never_answers_times_out(silent_port: int, scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{silent_port}/repo.git"
    with pytest.raises(GitUnavailable, match="timed out") as caught:
        GitRemote(timeout=0.5).resolve(url, "main", None)
    assert_unavailable(caught.value, url)


# ---------------------------------------------------------------------------------------------
# Answers that are no git refs, and redirects


def test_a_login_page_is_no_ref_list(git_repositories: GitRepositories) -> None:
    server = start_git_server(git_repositories, token=new_token())
    server.login_page = True
    try:
        with pytest.raises(GitError, match="does not speak git's smart HTTP protocol") as caught:
            GIT.resolve(server.url, "main", token_credentials(server))
    finally:
        server.stop()
    assert type(caught.value) is GitError
    assert not caught.value.transient
    assert "text/html" in str(caught.value)
    assert server.url in str(caught.value)


def test_a_renamed_repository_is_followed(git_repositories: GitRepositories) -> None:
    server = start_git_server(git_repositories, token=new_token())
    server.moved["old-name.git"] = "repo.git"
    old_url = server.repository_url("old-name.git")
    try:
        assert GIT.resolve(old_url, BRANCH, token_credentials(server)) == server.commits.feature
        with pytest.raises(GitAuthFailed, match="no auth secret"):
            GIT.resolve(old_url, BRANCH, None)
    finally:
        server.stop()


def test_credentials_never_follow_a_redirect_to_another_host(git_repositories: GitRepositories) -> None:
    other = start_git_server(git_repositories)
    server = start_git_server(git_repositories, token=new_token())
    server.moved["old-name.git"] = other.url
    try:
        commit = GIT.resolve(server.repository_url("old-name.git"), BRANCH, token_credentials(server))
    finally:
        server.stop()
        other.stop()
    assert commit == server.commits.feature
    assert other.usernames
    assert set(other.usernames) == {None}
