"""What the Secrets of a build hold, read without I/O. Pure.

Registry credentials from a push secret's `.dockerconfigjson`, git credentials from an auth secret, and
every value of a Secret that a build log must not show. Errors name Secret keys, never values.

The roots of the registry and git gateways' error taxonomies are here too, because reading a Secret
fails with one of their errors (InvalidPushSecret, InvalidGitSecret); registry.py and gitremote.py
re-export them, so `except RegistryError` and `except GitError` catch these as well.
"""

import base64
import binascii
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from servicebuild.imageref import DOCKER_HUB, DOCKER_HUB_API

DOCKER_CONFIG_KEY = ".dockerconfigjson"
"""The key of a kubernetes.io/dockerconfigjson Secret's data."""
DEFAULT_USERNAME = "x-access-token"
"""The username sent with a bare `token`: GitHub wants exactly this, GitLab and Gitea accept any."""

_TOKEN_KEYS = ("password", "identitytoken", "registrytoken")
"""Keys of a `.dockerconfigjson` entry that hold a secret besides `auth`."""
_DOCKER_HUB_KEYS = frozenset({DOCKER_HUB, "index.docker.io", DOCKER_HUB_API})


# The names below are part of the project's vocabulary (the status reasons use them), hence N818.
class RegistryError(Exception):
    """A registry could not answer what the operator asked; `transient` tells whether to retry."""

    transient: bool = False


class InvalidPushSecret(RegistryError):  # noqa: N818
    """The push secret's `.dockerconfigjson` cannot be read."""


class GitError(Exception):
    """A git remote could not answer; `transient` says whether to retry, `reason` is the status reason."""

    transient: bool = False
    reason: str = "GitError"


class InvalidGitSecret(GitError):  # noqa: N818
    """The auth secret lacks the keys a git remote needs, or holds unreadable values."""

    reason = "InvalidGitSecret"


# ---------------------------------------------------------------------------------------------
# Push secrets


@dataclass(frozen=True)
class Credentials:
    """A push secret's credentials for one registry; the repr hides the password."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<redacted>)"


def push_credentials(data: Mapping[str, str], registry: str, *, name: str) -> Credentials | None:
    """The credentials for `registry` in the push secret `name`'s (base64) `data`, or None if it has none."""
    if DOCKER_CONFIG_KEY not in data:
        raise InvalidPushSecret(f"{name!r} has no key {DOCKER_CONFIG_KEY!r}")
    try:
        config = base64.b64decode(data[DOCKER_CONFIG_KEY], validate=True)
    except ValueError:  # binascii.Error, or a str that is not ASCII
        raise InvalidPushSecret(f"{name!r} is not base64") from None
    return credentials_from_docker_config(config, registry)


def credentials_from_docker_config(config_json: bytes | str, registry: str) -> Credentials | None:
    """The credentials for `registry` in a `.dockerconfigjson` document, or None if it has no entry."""
    try:
        document = json.loads(config_json)
    except ValueError:
        # `from None`: a JSONDecodeError carries the whole document, secrets included.
        raise InvalidPushSecret("the push secret's .dockerconfigjson is not valid JSON") from None
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        raise InvalidPushSecret("the push secret's .dockerconfigjson has no 'auths' object")
    wanted = _registry_key(registry)
    # An entry written exactly as the registry wins over one that only normalises to it.
    for key, entry in sorted(auths.items(), key=lambda item: item[0] != registry):
        if _registry_key(key) == wanted:
            return _entry_credentials(key, entry)
    return None


def docker_config_secrets(config_json: str) -> list[str]:
    """Every password and token in a `.dockerconfigjson` document, to scrub from build logs; [] when
    it cannot be read."""
    try:
        auths = json.loads(config_json).get("auths")
    except (ValueError, AttributeError):
        return []
    found: list[str] = []
    for key, entry in auths.items() if isinstance(auths, dict) else ():
        with contextlib.suppress(InvalidPushSecret):
            found.append(_entry_credentials(key, entry).password)
        if isinstance(entry, dict):
            found += [entry[name] for name in _TOKEN_KEYS if isinstance(entry.get(name), str)]
    return [value for value in found if value]


def _registry_key(key: str) -> str:
    """`https://host:port/v1/` → `host:port`; every Docker Hub alias → `docker.io`."""
    host = key.strip().lower().removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    return DOCKER_HUB if host in _DOCKER_HUB_KEYS else host


def _entry_credentials(key: str, entry: object) -> Credentials:
    problem = f"the .dockerconfigjson entry for {key!r}"
    if not isinstance(entry, dict):
        raise InvalidPushSecret(f"{problem} is not an object")
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"], validate=True).decode()
        except (ValueError, TypeError):
            raise InvalidPushSecret(f"{problem} has an 'auth' that is not base64 of user:password") from None
        username, colon, password = decoded.partition(":")
        if not colon:
            raise InvalidPushSecret(f"{problem} has an 'auth' that is not base64 of user:password")
        return Credentials(username, password)
    user, secret = entry.get("username"), entry.get("password")
    if isinstance(user, str) and user and isinstance(secret, str):
        return Credentials(user, secret)
    raise InvalidPushSecret(f"{problem} has neither 'auth' nor 'username' and 'password'")


# ---------------------------------------------------------------------------------------------
# Git auth secrets


@dataclass(frozen=True)
class GitCredentials:
    """An auth secret's credentials; the repr hides the password and the private key."""

    username: str | None = None
    password: str | None = None
    ssh_private_key: str | None = None

    def __repr__(self) -> str:
        def hidden(value: str | None) -> str:
            return "None" if value is None else "<redacted>"

        return (
            f"GitCredentials(username={self.username!r}, password={hidden(self.password)}, "
            f"ssh_private_key={hidden(self.ssh_private_key)})"
        )


def git_credentials_from_secret(data: Mapping[str, str]) -> GitCredentials:
    """Credentials from a git auth Secret's (base64) `data`.

    `token` (username `x-access-token` unless `username` is given), or `password` with `username`
    (kubernetes.io/basic-auth), and/or `ssh-privatekey` (kubernetes.io/ssh-auth). Other keys, such as
    `known_hosts`, are ignored: BuildKit takes no known_hosts for a git context.
    """
    username = _decoded(data, "username", strip=True)
    token = _decoded(data, "token", strip=True)
    password = _decoded(data, "password", strip=True)
    private_key = _decoded(data, "ssh-privatekey", strip=False)
    secret = token if token is not None else password
    if secret is None and private_key is None:
        present = ", ".join(sorted(data)) or "none"
        raise InvalidGitSecret(
            "the git auth secret needs the key 'token', 'password' (with 'username') or "
            f"'ssh-privatekey'; it has: {present}"
        )
    if token is None and password is not None and username is None:
        raise InvalidGitSecret("the git auth secret has 'password' but no 'username'")
    return GitCredentials(
        username=(username or DEFAULT_USERNAME) if secret is not None else None,
        password=secret,
        ssh_private_key=private_key,
    )


def _decoded(data: Mapping[str, str], key: str, *, strip: bool) -> str | None:
    if key not in data:
        return None
    try:
        value = base64.b64decode(data[key], validate=True).decode()
    except (binascii.Error, ValueError, TypeError):
        # `from None`: the underlying error would quote the value.
        raise InvalidGitSecret(f"the git auth secret's key {key!r} is not base64 of UTF-8 text") from None
    # `echo token | base64` leaves a newline that would end up in the Authorization header.
    value = value.strip("\r\n") if strip else value
    if not value:
        raise InvalidGitSecret(f"the git auth secret's key {key!r} is empty")
    return value


# ---------------------------------------------------------------------------------------------
# Any Secret a build uses


def secret_values(data: Mapping[str, str]) -> list[str]:
    """What a build log must not show of a Secret: each value of its (base64) `data`, decoded, and each
    password and token of a `.dockerconfigjson` among them. A value that is not base64 is skipped."""
    values: list[str] = []
    for encoded in data.values():
        try:
            value = base64.b64decode(encoded, validate=True).decode(errors="replace")
        except ValueError:  # binascii.Error, or a str that is not ASCII
            continue
        values += [value, *docker_config_secrets(value)]
    return values
