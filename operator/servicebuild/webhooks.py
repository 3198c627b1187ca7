"""Push webhooks from git servers: is a delivery genuine, and what does it say. Pure.

The receiver (webhook_server.py) passes a request's headers and raw body in and gets a `Delivery` back:
a `Push` to act on, another event it `Ignored`, or a `Rejected` delivery with the HTTP status to answer.
Nothing a sender sends makes these functions raise.

GitHub signs the body: `X-Hub-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the raw body keyed with the
webhook's secret. GitLab sends the secret itself in `X-Gitlab-Token`. Both are compared in constant time,
before anything of the body is read.

A push says which repository's ref moved, and to which commit. That commit (`after`) is for messages
only: a push makes the ServiceBuilds it concerns resolve their revision again with the git server, and
they build what the server says. A delivery can make the operator look again, never choose what it builds.
"""

import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from servicebuild.giturl import parse_git_url

Provider = Literal["github", "gitlab"]

BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"
GITLAB_PUSH_EVENTS = frozenset({"Push Hook", "Tag Push Hook"})
"""The `X-Gitlab-Event` of a push to a branch and of a push of a tag (GitLab sends them apart)."""

_SIGNATURE_RE = re.compile(r"sha256=(?P<digest>[0-9a-fA-F]{64})")
_COMMIT_RE = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
_NO_COMMIT_RE = re.compile(r"0+")
_JSON = "application/json"


def verify_github_signature(secret: bytes, body: bytes, signature: str | None) -> bool:
    """Whether `signature`, the `X-Hub-Signature-256` header, is `sha256=` and the hex HMAC-SHA256 of `body`
    keyed with `secret`. Anything else is not: no header, another algorithm (`sha1=`, GitHub's older
    `X-Hub-Signature`), a truncated or malformed digest, an empty secret."""
    if not secret or signature is None:
        return False
    given = _SIGNATURE_RE.fullmatch(signature)
    if given is None:
        return False
    expected = hmac.new(secret, body, hashlib.sha256).digest()
    return hmac.compare_digest(expected, bytes.fromhex(given["digest"]))


def verify_gitlab_token(secret: bytes, token: str | None) -> bool:
    """Whether `token`, the `X-Gitlab-Token` header, is `secret`; never with an empty secret."""
    if not secret or token is None:
        return False
    try:
        given = token.encode()
    except UnicodeEncodeError:  # a header aiohttp could only decode with surrogates
        return False
    return hmac.compare_digest(secret, given)


@dataclass(frozen=True)
class PushEvent:
    """A genuine push: a ref of a repository moved."""

    provider: Provider
    delivery: str | None
    """The sender's id of the delivery, the same when it delivers it again: GitHub's `X-GitHub-Delivery`;
    GitLab's `Idempotency-Key` (GitLab 17.4 and later), else its `X-Gitlab-Event-UUID`. None without one."""
    repository: str
    """The repository's name for messages: GitHub's `full_name`, GitLab's `path_with_namespace`."""
    urls: tuple[str, ...]
    """The repository's URLs as the sender gives them (HTTPS, SSH, git, web page): a ServiceBuild naming the
    repository in any form is concerned (`GitUrl.repository_key`)."""
    ref: str
    """The full name of the ref that moved: `refs/heads/<branch>`, `refs/tags/<tag>`, …"""
    after: str
    """The commit the ref names now, as the sender says (all zeros: the ref was deleted). For messages only:
    never built unverified."""
    default_branch: str | None = None
    """The repository's default branch, when the sender says."""

    @property
    def branch(self) -> str | None:
        """The branch pushed to, or None for a tag or another ref."""
        return self.ref.removeprefix(BRANCH_PREFIX) if self.ref.startswith(BRANCH_PREFIX) else None

    @property
    def tag(self) -> str | None:
        """The tag pushed, or None for a branch or another ref."""
        return self.ref.removeprefix(TAG_PREFIX) if self.ref.startswith(TAG_PREFIX) else None

    @property
    def deleted(self) -> bool:
        """The push deleted the ref."""
        return bool(_NO_COMMIT_RE.fullmatch(self.after))

    @property
    def delivery_key(self) -> str | None:
        """What tells this delivery from others of any sender; None without a delivery id."""
        return None if self.delivery is None else f"{self.provider}:{self.delivery}"

    @cached_property
    def repository_keys(self) -> frozenset[str]:
        """The repository keys of `urls`, those that parse as git URLs."""
        keys = set()
        for url in self.urls:
            try:
                keys.add(parse_git_url(url).repository_key)
            except ValueError:
                continue
        return frozenset(keys)

    def concerns(self, url: str, revision: str | None) -> bool:
        """Whether a ServiceBuild that builds `revision` of `url` may have a new commit to build: `url` names
        the pushed repository, in any form, and the push `moves` the revision."""
        try:
            key = parse_git_url(url).repository_key
        except ValueError:
            return False
        return key in self.repository_keys and self.moves(revision)

    def moves(self, revision: str | None) -> bool:
        """Whether the push may change the commit `revision` names: a branch or tag by its short name, as the
        operator resolves it (a branch and a tag of the same name both count), or the full ref name. No
        revision (or `HEAD`) is the default branch; when the sender does not say which that is, any branch.
        A full commit id never moves."""
        if revision is None or revision == "HEAD":
            return self.branch is not None and self.default_branch in {None, self.branch}
        if _COMMIT_RE.fullmatch(revision):
            return False
        return revision in {self.ref, self.branch, self.tag}


@dataclass(frozen=True)
class Push:
    """A genuine push: look for the ServiceBuilds it concerns."""

    event: PushEvent


@dataclass(frozen=True)
class Ignored:
    """A genuine delivery of another event (GitHub's `ping` when the webhook is made, an issue, …):
    answered 202, nothing done."""

    event: str


@dataclass(frozen=True)
class Rejected:
    """A delivery not acted on, and the HTTP status that says why: 401 not from the secret's holder, 400
    malformed, 415 not JSON."""

    status: int
    reason: str


Delivery = Push | Ignored | Rejected


class _Payload(BaseModel):
    """Only the fields the operator reads; the rest of a payload is ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


_Ref = Annotated[str, Field(pattern=r"^refs/\S+$", max_length=1024)]


class _GitHubRepository(_Payload):
    full_name: str = ""
    clone_url: str | None = None
    ssh_url: str | None = None
    git_url: str | None = None
    html_url: str | None = None
    default_branch: str | None = None


class _GitHubPush(_Payload):
    ref: _Ref
    after: str = ""
    repository: _GitHubRepository


class _GitLabProject(_Payload):
    path_with_namespace: str = ""
    git_http_url: str | None = None
    git_ssh_url: str | None = None
    web_url: str | None = None
    default_branch: str | None = None


class _GitLabPush(_Payload):
    ref: _Ref
    after: str = ""
    project: _GitLabProject


def read_github(headers: Mapping[str, str], body: bytes, secret: bytes) -> Delivery:
    """A delivery to the GitHub endpoint: its signature, its content type, its event, then (a push) its
    body."""
    named = _by_lower_name(headers)
    if not verify_github_signature(secret, body, named.get("x-hub-signature-256")):
        return Rejected(401, "X-Hub-Signature-256 is missing or is not the body's signature with the secret")
    if not _is_json(named):  # before the event: GitHub's ping shows the mistake when the webhook is made
        return Rejected(415, "set the webhook's content type to application/json")
    event = named.get("x-github-event")
    if not event:
        return Rejected(400, "no X-GitHub-Event header")
    if event != "push":
        return Ignored(event)
    try:
        payload = _GitHubPush.model_validate_json(body)
    except ValidationError as error:
        return Rejected(400, f"not a GitHub push event: {_problem(error)}")
    repository = payload.repository
    urls = (repository.clone_url, repository.ssh_url, repository.git_url, repository.html_url)
    return Push(
        PushEvent(
            provider="github",
            delivery=named.get("x-github-delivery") or None,
            repository=repository.full_name,
            urls=tuple(url for url in urls if url),
            ref=payload.ref,
            after=payload.after,
            default_branch=repository.default_branch or None,
        )
    )


def read_gitlab(headers: Mapping[str, str], body: bytes, secret: bytes) -> Delivery:
    """A delivery to the GitLab endpoint: its token, its content type, its event, then (a push) its body."""
    named = _by_lower_name(headers)
    if not verify_gitlab_token(secret, named.get("x-gitlab-token")):
        return Rejected(401, "X-Gitlab-Token is missing or is not the secret")
    if not _is_json(named):
        return Rejected(415, "GitLab sends JSON")
    event = named.get("x-gitlab-event")
    if not event:
        return Rejected(400, "no X-Gitlab-Event header")
    if event not in GITLAB_PUSH_EVENTS:
        return Ignored(event)
    try:
        payload = _GitLabPush.model_validate_json(body)
    except ValidationError as error:
        return Rejected(400, f"not a GitLab push event: {_problem(error)}")
    project = payload.project
    urls = (project.git_http_url, project.git_ssh_url, project.web_url)
    return Push(
        PushEvent(
            provider="gitlab",
            delivery=named.get("idempotency-key") or named.get("x-gitlab-event-uuid") or None,
            repository=project.path_with_namespace,
            urls=tuple(url for url in urls if url),
            ref=payload.ref,
            after=payload.after,
            default_branch=project.default_branch or None,
        )
    )


def _by_lower_name(headers: Mapping[str, str]) -> dict[str, str]:
    """HTTP header names are case-insensitive."""
    return {name.lower(): value for name, value in headers.items()}


def _is_json(headers: Mapping[str, str]) -> bool:
    """No content type, or JSON (GitHub's other choice is a form with the JSON in a field)."""
    media_type = headers.get("content-type", _JSON).partition(";")[0].strip().lower()
    return media_type == _JSON


def _problem(error: ValidationError) -> str:
    """What is wrong with a payload, in a line, without its values."""
    return "; ".join(
        f"{'.'.join(map(str, details['loc'])) or 'the body'}: {details['msg']}"
        for details in error.errors(include_url=False, include_input=False)[:3]
    )


class DeliveryLog:
    """The deliveries seen lately, so that each is acted on once: a delivery sent again (by hand, or by an
    attacker replaying it) has the id of the first. In memory and bounded: at most `capacity` ids, each
    for `window` seconds. The time is passed in (a monotonic clock)."""

    def __init__(self, capacity: int = 4096, window: float = 24 * 3600.0) -> None:
        self._capacity = capacity
        self._window = window
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first(self, key: str, now: float) -> bool:
        """Whether `key` was not seen in the window before `now`; from now on it was."""
        while self._seen:
            oldest, since = next(iter(self._seen.items()))
            if now - since < self._window:
                break
            del self._seen[oldest]
        if key in self._seen:
            return False
        self._seen[key] = now
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True

    def forget(self, key: str) -> None:
        """`key` was not acted on after all (the operator failed to): a delivery sent again is acted on."""
        self._seen.pop(key, None)

    def __len__(self) -> int:
        return len(self._seen)
