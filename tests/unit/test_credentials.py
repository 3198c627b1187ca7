"""Reading the Secrets a build uses (servicebuild.credentials): push secrets, git auth secrets, log scrubbing.

We test these aspects:
- `.dockerconfigjson`: `auth` (base64 user:password) and `username`/`password` entries; keys
  written as host, host:port, https://host, http://host/v1/; the Docker Hub key
  `https://index.docker.io/v1/` serves `docker.io`; a port is part of the host; an exact key
  wins over one that only normalises to the registry; no entry → None;
- malformed documents and entries → InvalidPushSecret whose message holds no secret;
- a push secret's data: its `.dockerconfigjson` base64-decoded and read; not base64 or no such
  key → InvalidPushSecret naming the Secret, never a value;
- Credentials never show the password in repr, str or f-strings;
- a git auth secret's data: `token` (username `x-access-token` unless `username` is given),
  `username` + `password` (kubernetes.io/basic-auth), `ssh-privatekey` (kubernetes.io/ssh-auth),
  token and key together; a trailing newline is dropped from a token or password but kept in a private
  key; other keys such as `known_hosts` are ignored, whatever they hold;
- git secrets that cannot be used (no usable key, `password` without `username`, bad base64,
  non-UTF-8, empty values) → InvalidGitSecret whose message names keys, never values;
- GitCredentials never shows the password or the private key in repr, str or f-strings;
- what a build log must not show of a Secret: every value decoded, and every password and token
  inside a `.dockerconfigjson` among them; values that are not base64 skipped;
- the secret errors belong to the gateways' taxonomies: InvalidPushSecret is a RegistryError,
  InvalidGitSecret a GitError, both permanent.
"""

import base64
import json
import secrets
from typing import Any

import pytest

from servicebuild.credentials import (
    DEFAULT_USERNAME,
    Credentials,
    GitCredentials,
    InvalidGitSecret,
    InvalidPushSecret,
    credentials_from_docker_config,
    git_credentials_from_secret,
    push_credentials,
    secret_values,
)
from servicebuild.gitremote import GitError
from servicebuild.registry import RegistryError

SECRET = "hunter2-very-secret"  # noqa: S105 (a made-up password that must never show)
TOKEN = f"ghp_{secrets.token_hex(12)}"
PASSWORD = f"pw-{secrets.token_hex(8)}"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n"
KNOWN_HOSTS = "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample\n"


def b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


# ---------------------------------------------------------------------------------------------
# Push secrets


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def config(auths: dict[str, Any]) -> str:
    return json.dumps({"auths": auths})


@pytest.mark.parametrize(
    ("auths", "registry", "expected"),
    [
        ({"reg.example.com": {"auth": basic("ci", SECRET)}}, "reg.example.com", ("ci", SECRET)),
        ({"reg.example.com": {"username": "ci", "password": SECRET}}, "reg.example.com", ("ci", SECRET)),
        ({"reg.example.com": {"auth": basic("ci", "pa:ss")}}, "reg.example.com", ("ci", "pa:ss")),
        ({"https://reg.example.com": {"auth": basic("ci", SECRET)}}, "reg.example.com", ("ci", SECRET)),
        (
            {"http://reg.example.com:5000/v1/": {"auth": basic("ci", SECRET)}},
            "reg.example.com:5000",
            ("ci", SECRET),
        ),
        ({"Reg.Example.com": {"auth": basic("ci", SECRET)}}, "reg.example.com", ("ci", SECRET)),
        ({"https://index.docker.io/v1/": {"auth": basic("hub", SECRET)}}, "docker.io", ("hub", SECRET)),
        ({"docker.io": {"auth": basic("hub", SECRET)}}, "registry-1.docker.io", ("hub", SECRET)),
        (
            {
                "https://reg.example.com": {"auth": basic("other", "x")},
                "reg.example.com": {"auth": basic("ci", "y")},
            },
            "reg.example.com",
            ("ci", "y"),
        ),
        # An empty `auth` falls back to username/password, as docker does.
        (
            {"reg.example.com": {"auth": "", "username": "ci", "password": SECRET}},
            "reg.example.com",
            ("ci", SECRET),
        ),
        ({"reg.example.com:5000": {"auth": basic("ci", SECRET)}}, "reg.example.com", None),
        ({"reg.example.com": {"auth": basic("ci", SECRET)}}, "reg.example.com:5000", None),
        ({"other.example.com": {"auth": basic("ci", SECRET)}}, "reg.example.com", None),
        ({"https://index.docker.io/v1/": {"auth": basic("hub", SECRET)}}, "ghcr.io", None),
        ({}, "reg.example.com", None),
    ],
)
def test_credentials_from_docker_config(
    auths: dict[str, Any], registry: str, expected: tuple[str, str] | None
) -> None:
    found = credentials_from_docker_config(config(auths), registry)
    assert found == (Credentials(*expected) if expected else None)


def test_credentials_from_bytes() -> None:
    document = config({"reg.example.com": {"auth": basic("ci", SECRET)}}).encode()
    assert credentials_from_docker_config(document, "reg.example.com") == Credentials("ci", SECRET)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (f'{{"auths": {{"reg.example.com": {{"password": "{SECRET}"', "not valid JSON"),
        (b"\xff\xfe" + SECRET.encode(), "not valid JSON"),
        (json.dumps({"reg.example.com": {"auth": basic("ci", SECRET)}}), "no 'auths'"),
        (json.dumps([SECRET]), "no 'auths'"),
        (config({"reg.example.com": SECRET}), "not an object"),
        (config({"reg.example.com": {"auth": f"{SECRET}!!"}}), "not base64"),
        (config({"reg.example.com": {"auth": base64.b64encode(SECRET.encode()).decode()}}), "not base64"),
        (config({"reg.example.com": {"password": SECRET}}), "neither"),
        (config({"reg.example.com": {"identitytoken": SECRET}}), "neither"),
    ],
)
def test_malformed_push_secret(document: str | bytes, problem: str) -> None:
    with pytest.raises(InvalidPushSecret) as invalid:
        credentials_from_docker_config(document, "reg.example.com")

    assert problem in str(invalid.value)
    assert SECRET not in str(invalid.value)
    assert SECRET not in repr(invalid.value)
    # No chained exception carries the document into a traceback either.
    assert invalid.value.__cause__ is None
    assert invalid.value.__suppress_context__ or invalid.value.__context__ is None
    assert not invalid.value.transient


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            {".dockerconfigjson": b64(config({"reg.example.com": {"auth": basic("ci", SECRET)}}))},
            Credentials("ci", SECRET),
            id="entry",
        ),
        pytest.param(
            {".dockerconfigjson": b64(config({"other.example.com": {"auth": basic("ci", SECRET)}}))},
            None,
            id="no entry",
        ),
        pytest.param(
            {".dockerconfigjson": b64(config({})), "extra": "not base64!"}, None, id="other keys ignored"
        ),
    ],
)
def test_push_credentials(data: dict[str, str], expected: Credentials | None) -> None:
    assert push_credentials(data, "reg.example.com", name="registry-push") == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({".dockerconfigjson": f"{SECRET}!"}, "^'registry-push' is not base64$", id="not base64"),
        pytest.param(
            {".dockerconfigjson": f"{SECRET}\u00e9"}, "^'registry-push' is not base64$", id="non-ASCII"
        ),
        pytest.param({".dockerconfigjson": b64(SECRET)}, "not valid JSON", id="not JSON"),
        pytest.param(
            {".dockerconfigjson": b64(config({"reg.example.com": {"password": SECRET}}))},
            "neither 'auth' nor 'username' and 'password'",
            id="unusable entry",
        ),
        pytest.param(
            {"config.json": b64("{}")}, "^'registry-push' has no key '.dockerconfigjson'$", id="no key"
        ),
    ],
)
def test_unreadable_push_secrets(data: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidPushSecret, match=message) as caught:
        push_credentials(data, "reg.example.com", name="registry-push")
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None


def test_credentials_never_show_the_password() -> None:
    credentials = Credentials("ci", SECRET)
    for shown in (repr(credentials), str(credentials), f"{credentials}", repr([credentials])):
        assert SECRET not in shown
        assert "ci" in shown


# ---------------------------------------------------------------------------------------------
# Git auth secrets


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
def test_git_credentials_from_secret(data: dict[str, str], expected: GitCredentials) -> None:
    assert git_credentials_from_secret(data) == expected


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
        git_credentials_from_secret(data)
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
# What build logs must not show


DOCKER_CONFIG = config(
    {
        "reg.example.com": {"auth": basic("ci", SECRET)},
        "ghcr.io": {"username": "bot", "password": PASSWORD, "identitytoken": TOKEN},
        "broken.example.com": {"auth": "not base64!"},
    }
)


@pytest.mark.parametrize(
    ("data", "values"),
    [
        pytest.param({}, [], id="no data"),
        pytest.param({"token": b64(TOKEN)}, [TOKEN], id="a value"),
        pytest.param(
            {"username": b64("builder"), "password": b64(PASSWORD)}, ["builder", PASSWORD], id="each value"
        ),
        pytest.param({"ssh-privatekey": b64(KEY)}, [KEY], id="a key as written"),
        pytest.param(
            {".dockerconfigjson": b64(DOCKER_CONFIG)},
            [DOCKER_CONFIG, SECRET, PASSWORD, PASSWORD, TOKEN],
            id="the passwords and tokens of a docker config",
        ),
        pytest.param({"binary": b64(b"\xffok")}, ["\ufffdok"], id="not UTF-8"),
        pytest.param(
            {"token": b64(TOKEN), "bad": "not base64!", "odd": "t\u00f6ken"}, [TOKEN], id="not base64"
        ),
    ],
)
def test_secret_values(data: dict[str, str], values: list[str]) -> None:
    assert secret_values(data) == values


# ---------------------------------------------------------------------------------------------
# The taxonomy


def test_secret_errors_belong_to_the_gateways_taxonomies() -> None:
    assert issubclass(InvalidPushSecret, RegistryError)
    assert issubclass(InvalidGitSecret, GitError)
    assert not InvalidPushSecret("x").transient
    assert not InvalidGitSecret("x").transient
    assert InvalidGitSecret("x").reason == "InvalidGitSecret"
