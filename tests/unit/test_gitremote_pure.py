"""The git gateway's parts that need no server: auth secrets, URLs, picking a commit among refs.

We test these aspects:
- a Secret's data: `token` (username `x-access-token` unless `username` is given),
  `username` + `password` (kubernetes.io/basic-auth), `ssh-privatekey` (kubernetes.io/ssh-auth),
  token and key together; a trailing newline is dropped from a token or password but kept in a private
  key; other keys such as `known_hosts` are ignored, whatever they hold;
- secrets the gateway cannot use (no usable key, `password` without `username`, bad base64,
  non-UTF-8, empty values) → InvalidGitSecret whose message names keys, never values;
- GitCredentials never shows the password or the private key in repr, str or f-strings;
- picking the commit among advertised refs: HEAD, branch before tag, the peeled value of an
  annotated tag, full ref names, an unborn HEAD;
- SSH remotes: a full commit id is returned as is, a branch or tag is SshResolutionUnsupported;
  URLs that are no git remote (file://, local paths, ftp://, git+ssh://, scp-style without a user, a
  fragment) are UnsupportedSource, before any I/O, and the message shows no credentials (the URL forms
  themselves are tested in test_giturl.py);
- which errors are transient, and their reasons.
"""

import base64
import secrets

import pytest

from servicebuild.gitremote import (
    DEFAULT_USERNAME,
    SSH_NEEDS_COMMIT,
    GitAuthFailed,
    GitCredentials,
    GitError,
    GitRemote,
    GitUnavailable,
    InvalidGitSecret,
    RevisionNotFound,
    SourceNotFound,
    SshResolutionUnsupported,
    UnsupportedSource,
    credentials_from_secret,
    is_full_commit,
    select_commit,
)
from servicebuild.giturl import parse_git_url

TOKEN = f"ghp_{secrets.token_hex(12)}"
PASSWORD = f"pw-{secrets.token_hex(8)}"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n"
KNOWN_HOSTS = "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample\n"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"
TAG_OBJECT = "fedcba9876543210fedcba9876543210fedcba98"


def b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


# ---------------------------------------------------------------------------------------------
# Secret data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            {"token": b64(TOKEN)},
            GitCredentials(username=DEFAULT_USERNAME, password=TOKEN),
            id="token",
        ),
        pytest.param(
            {"token": b64(TOKEN + "\n")},
            GitCredentials(username=DEFAULT_USERNAME, password=TOKEN),
            id="token-with-echo-newline",
        ),
        pytest.param(
            {"token": b64(TOKEN), "username": b64("oauth2")},
            GitCredentials(username="oauth2", password=TOKEN),
            id="token-with-username",
        ),
        pytest.param(
            {"username": b64("builder"), "password": b64(PASSWORD + "\r\n")},
            GitCredentials(username="builder", password=PASSWORD),
            id="basic-auth",
        ),
        pytest.param(
            {"ssh-privatekey": b64(KEY)},
            GitCredentials(ssh_private_key=KEY),
            id="ssh-auth",
        ),
        pytest.param(
            {"ssh-privatekey": b64(KEY), "known_hosts": b64(KNOWN_HOSTS)},
            GitCredentials(ssh_private_key=KEY),
            id="ssh-auth-ignoring-known-hosts",
        ),
        pytest.param(
            {"ssh-privatekey": b64(KEY), "known_hosts": ""},
            GitCredentials(ssh_private_key=KEY),
            id="ssh-auth-ignoring-empty-known-hosts",
        ),
        pytest.param(
            {"token": b64(TOKEN), "known_hosts": "not base64!", "config": b64(b"\xff")},
            GitCredentials(username=DEFAULT_USERNAME, password=TOKEN),
            id="token-ignoring-unusable-other-keys",
        ),
        pytest.param(
            {"token": b64(TOKEN), "ssh-privatekey": b64(KEY)},
            GitCredentials(username=DEFAULT_USERNAME, password=TOKEN, ssh_private_key=KEY),
            id="token-and-key",
        ),
    ],
)
def test_credentials_from_secret(data: dict[str, str], expected: GitCredentials) -> None:
    assert credentials_from_secret(data) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({}, r"it has: none", id="empty"),
        pytest.param({"username": b64("builder")}, r"'token'.*it has: username$", id="username-only"),
        pytest.param(
            {"known_hosts": b64(KNOWN_HOSTS), "config": b64("x")},
            r"it has: config, known_hosts$",
            id="known-hosts-only",
        ),
        pytest.param({"password": b64(PASSWORD)}, r"'password' but no 'username'", id="password-only"),
        pytest.param({"token": "not base64!"}, r"'token' is not base64", id="bad-base64"),
        pytest.param(
            {"token": b64(b"\xff\xfe" + TOKEN.encode())}, r"'token' is not base64 of UTF-8", id="binary"
        ),
        pytest.param({"token": b64("\n")}, r"'token' is empty", id="empty-token"),
    ],
)
def test_unusable_secrets(data: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidGitSecret, match=message) as caught:
        credentials_from_secret(data)
    error = caught.value
    assert error.reason == "InvalidGitSecret"
    assert not error.transient
    for secret in (TOKEN, PASSWORD, KEY, "b3BlbnNzaC1rZXktdjE=", "not base64!", *data.values()):
        if secret:
            assert secret not in str(error)


def test_credentials_hide_secrets() -> None:
    credentials = GitCredentials(username="builder", password=PASSWORD, ssh_private_key=KEY)
    for text in (
        repr(credentials),
        str(credentials),
        f"{credentials}",
        f"{credentials!r}",
        repr([credentials]),
    ):
        assert PASSWORD not in text
        assert "b3BlbnNzaC1rZXktdjE=" not in text
        assert "builder" in text
        assert "<redacted>" in text
    assert repr(GitCredentials()) == "GitCredentials(username=None, password=None, ssh_private_key=None)"


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
        f"https://user:{PASSWORD}@git.example.com/repo.git#main",
    ],
)
def test_urls_that_are_no_git_remote(url: str) -> None:
    with pytest.raises(UnsupportedSource, match="is not an http") as caught:
        GitRemote(timeout=1.0).resolve(url, "main", None)
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
