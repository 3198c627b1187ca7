"""The git gateway's parts that need no server: URLs it refuses, picking a commit among refs.

The auth secret's parsing is tested in test_credentials.py, the URL forms in test_giturl.py.

We test these aspects:
- picking the commit among advertised refs: HEAD, branch before tag, the peeled value of an
  annotated tag, full ref names, an unborn HEAD;
- SSH remotes: a full commit id is returned as is, a branch or tag is SshResolutionUnsupported;
  URLs that are no git remote (file://, local paths, ftp://, git+ssh://, scp-style without a user,
  ssh:// without a repository path, a fragment) are UnsupportedSource, with a full commit id too,
  before any I/O, and the message shows no credentials;
- which errors are transient, and their reasons.
"""

import secrets

import pytest

from servicebuild.credentials import GitCredentials
from servicebuild.gitremote import (
    SSH_NEEDS_COMMIT,
    GitAuthFailed,
    GitError,
    GitRemote,
    GitUnavailable,
    InvalidGitSecret,
    RevisionNotFound,
    SourceNotFound,
    SshResolutionUnsupported,
    UnsupportedSource,
    select_commit,
)
from servicebuild.giturl import is_full_commit, parse_git_url

PASSWORD = f"pw-{secrets.token_hex(8)}"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"
TAG_OBJECT = "fedcba9876543210fedcba9876543210fedcba98"


# ---------------------------------------------------------------------------------------------
# Picking the commit among advertised refs (as dulwich's ls-remote returns them)


REFS: dict[bytes, bytes | None] = {
    b"HEAD": COMMIT.encode(),
    b"refs/heads/main": COMMIT.encode(),
    b"refs/heads/release/1.x": OTHER.encode(),
    b"refs/heads/both": COMMIT.encode(),
    b"refs/tags/both": OTHER.encode(),
    b"refs/tags/v1.0": OTHER.encode(),
    b"refs/tags/v1.1": TAG_OBJECT.encode(),
    b"refs/tags/v1.1^{}": OTHER.encode(),
}


@pytest.mark.parametrize(
    ("revision", "commit"),
    [
        (None, COMMIT),
        ("HEAD", COMMIT),
        ("main", COMMIT),
        ("release/1.x", OTHER),
        ("v1.0", OTHER),
        ("v1.1", OTHER),  # the peeled commit, not the tag object
        ("refs/tags/v1.1", OTHER),
        ("refs/heads/main", COMMIT),
        ("both", COMMIT),  # a branch wins over a tag of the same name
        ("refs/tags/both", OTHER),
        ("nope", None),
        ("refs/heads/v1.0", None),
        ("1.x", None),
    ],
)
def test_select_commit(revision: str | None, commit: str | None) -> None:
    assert select_commit(REFS, revision) == commit


def test_unborn_head_selects_nothing() -> None:
    assert select_commit({b"HEAD": None}, None) is None


@pytest.mark.parametrize(
    ("revision", "full"),
    [(COMMIT, True), (COMMIT.upper(), True), (COMMIT[:39], False), (COMMIT + "0", False), ("main", False)],
)
def test_is_full_commit(revision: str, full: bool) -> None:
    assert is_full_commit(revision) is full


# ---------------------------------------------------------------------------------------------
# SSH and unsupported URLs: decided before any connection


SSH_URLS = [
    "ssh://git@git.example.com/shop/repo.git",
    "ssh://git.example.com:2222/shop/repo.git",
    "git@github.com:shop/repo.git",
]


@pytest.mark.parametrize("url", SSH_URLS)
def test_ssh_full_commit_is_returned_as_is(url: str) -> None:
    assert GitRemote(timeout=1.0).resolve(url, COMMIT.upper(), GitCredentials(ssh_private_key=KEY)) == COMMIT


@pytest.mark.parametrize("url", SSH_URLS)
@pytest.mark.parametrize("revision", [None, "main", "v1.0", COMMIT[:12]])
def test_ssh_branch_or_tag_is_unsupported(url: str, revision: str | None) -> None:
    with pytest.raises(SshResolutionUnsupported) as caught:
        GitRemote(timeout=1.0).resolve(url, revision, GitCredentials(ssh_private_key=KEY))
    assert SSH_NEEDS_COMMIT == "an SSH source needs spec.source.git.revision to be a full commit id"
    assert str(caught.value).endswith(SSH_NEEDS_COMMIT)
    assert parse_git_url(url).display in str(caught.value)
    assert not caught.value.transient
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/repo.git",
        "/var/lib/repo.git",
        "./repo.git",
        "ftp://host/repo.git",
        "https://host",
        "repo.git",
        "git+ssh://host/repo.git",
        "github.com:shop/repo.git",
        "ssh://git@git.example.com",
        f"https://user:{PASSWORD}@git.example.com/repo.git#main",
    ],
)
@pytest.mark.parametrize("revision", ["main", COMMIT])
def test_urls_that_are_no_git_remote(url: str, revision: str) -> None:
    with pytest.raises(UnsupportedSource, match="is not an http") as caught:
        GitRemote(timeout=1.0).resolve(url, revision, None)
    assert caught.value.reason == "UnsupportedSource"
    assert not caught.value.transient
    assert PASSWORD not in str(caught.value)


# ---------------------------------------------------------------------------------------------
# The taxonomy


@pytest.mark.parametrize(
    ("error", "reason", "transient"),
    [
        (GitError("x"), "GitError", False),
        (GitAuthFailed("x"), "GitAuthFailed", False),
        (SourceNotFound("x"), "SourceNotFound", False),
        (RevisionNotFound("x"), "SourceNotFound", False),
        (GitUnavailable("x"), "GitUnavailable", True),
        (InvalidGitSecret("x"), "InvalidGitSecret", False),
        (UnsupportedSource("x"), "UnsupportedSource", False),
        (SshResolutionUnsupported("x"), "UnsupportedSource", False),
    ],
)
def test_reasons_and_transience(error: GitError, reason: str, transient: bool) -> None:
    assert error.reason == reason
    assert error.transient is transient
