"""Push webhooks, read (servicebuild.webhooks): genuine or not, and what a push says.

We test these aspects:
- GitHub's signature, as a table: valid; a wrong secret, a changed body; truncated, too long or
  malformed digests; other algorithms (sha1, sha512, no prefix); no header; an empty body (its valid
  signature is valid, another body's is not); an empty secret never verifies;
- GitLab's token, as a table: the secret, another, a prefix or an extension of it, none, an empty secret;
- a delivery to each endpoint, as a table over the senders' documented payloads (tests/unit/webhook_payloads,
  see its README) and broken ones: a push is read into a `PushEvent` (delivery id, repository name and
  URLs, ref, commit, default branch); another event is ignored; the signature or token is checked first
  (401 whatever the event); a genuine delivery that is no readable push is 400 (an empty or non-JSON
  body, JSON of another shape, a ref outside refs/); one sent as a form is 415, a ping too, so that
  the mistake shows when the webhook is made; header names in any case;
- which ServiceBuilds a push concerns, as a table of URLs and revisions: any form of the repository's
  URL, a branch or tag by its short or full name, the default branch for no revision, never a commit id;
- the delivery log: a delivery id is acted on once within the window, again after it or after `forget`,
  and the log holds at most its capacity.
"""

import hmac
from dataclasses import replace
from pathlib import Path

import pytest

from servicebuild.webhooks import (
    DeliveryLog,
    Ignored,
    Push,
    PushEvent,
    Rejected,
    read_github,
    read_gitlab,
    verify_github_signature,
    verify_gitlab_token,
)

PAYLOADS = Path(__file__).parent / "webhook_payloads"
SECRET = b"It's a Secret to Everybody"
BODY = b"Hello, World!"
# GitHub's own example for this secret and body (docs: "Validating webhook deliveries", "Testing the
# webhook payload validation").
GITHUB_EXAMPLE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def sign(body: bytes, secret: bytes = SECRET, digest: str = "sha256") -> str:
    return f"{digest}={hmac.new(secret, body, digest).hexdigest()}"


SIGNATURES = [
    pytest.param(BODY, GITHUB_EXAMPLE, True, id="GitHub's documented example"),
    pytest.param(BODY, sign(BODY), True, id="valid"),
    pytest.param(BODY, sign(BODY).upper().replace("SHA256=", "sha256="), True, id="valid in upper-case hex"),
    pytest.param(BODY, sign(BODY, b"another secret"), False, id="wrong secret"),
    pytest.param(BODY + b" ", sign(BODY), False, id="body changed"),
    pytest.param(BODY, sign(BODY)[:-1], False, id="truncated by one digit"),
    pytest.param(BODY, sign(BODY)[:47], False, id="truncated to 40 digits"),
    pytest.param(BODY, "sha256=", False, id="no digest"),
    pytest.param(BODY, sign(BODY) + "0", False, id="one digit too many"),
    pytest.param(BODY, sign(BODY) + "\n", False, id="a trailing newline"),
    pytest.param(BODY, sign(BODY, digest="sha1"), False, id="sha1 (X-Hub-Signature)"),
    pytest.param(BODY, sign(BODY, digest="sha512"), False, id="sha512"),
    pytest.param(BODY, sign(BODY).removeprefix("sha256="), False, id="no algorithm"),
    pytest.param(BODY, sign(BODY).replace("sha256=", "SHA256="), False, id="upper-case algorithm"),
    pytest.param(BODY, sign(BODY).replace("sha256=", "sha256 = "), False, id="spaces"),
    pytest.param(BODY, sign(BODY)[:-2] + "zz", False, id="not hex"),
    pytest.param(BODY, sign(BODY)[:-2] + "\u00e9\u00e9", False, id="non-ASCII"),
    pytest.param(BODY, "", False, id="empty header"),
    pytest.param(BODY, None, False, id="no header"),
    pytest.param(b"", sign(b""), True, id="empty body, its signature"),
    pytest.param(b"", sign(BODY), False, id="empty body, another body's signature"),
]


@pytest.mark.parametrize(("body", "signature", "valid"), SIGNATURES)
def test_github_signature(body: bytes, signature: str | None, valid: bool) -> None:
    assert verify_github_signature(SECRET, body, signature) is valid


def test_an_empty_secret_verifies_nothing() -> None:
    assert not verify_github_signature(b"", BODY, sign(BODY, b""))
    assert not verify_gitlab_token(b"", "")


@pytest.mark.parametrize(
    ("token", "valid"),
    [
        pytest.param(SECRET.decode(), True, id="the secret"),
        pytest.param("another secret", False, id="another"),
        pytest.param(SECRET.decode()[:-1], False, id="a prefix"),
        pytest.param(SECRET.decode() + "!", False, id="an extension"),
        pytest.param(SECRET.decode().upper(), False, id="another case"),
        pytest.param(sign(SECRET), False, id="a signature"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="no header"),
        pytest.param("\udcff", False, id="undecodable"),
    ],
)
def test_gitlab_token(token: str | None, valid: bool) -> None:
    assert verify_gitlab_token(SECRET, token) is valid


# A delivery to each endpoint


def github(body: bytes, event: str | None = "push", **headers: str) -> dict[str, str]:
    sent = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/a5788b1",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Hook-ID": "292430182",
        "X-Hub-Signature-256": sign(body),
    }
    if event is not None:
        sent["X-GitHub-Event"] = event
    return sent | headers


HELLO_WORLD = PushEvent(
    provider="github",
    delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958",
    repository="Codertocat/Hello-World",
    urls=(
        "https://github.com/Codertocat/Hello-World.git",
        "git@github.com:Codertocat/Hello-World.git",
        "git://github.com/Codertocat/Hello-World.git",
        "https://github.com/Codertocat/Hello-World",
    ),
    ref="refs/heads/main",
    after="ec26c3e57ca3a959ca5aad62de7213c562f8c821",
    default_branch="main",
)
TAG_DELETED = PushEvent(
    provider="github",
    delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958",
    repository="Codertocat/Hello-World",
    urls=HELLO_WORLD.urls,
    ref="refs/tags/simple-tag",
    after="0000000000000000000000000000000000000000",
    default_branch="master",
)
NOT_A_PUSH = "not a GitHub push event"
NOT_SIGNED = "X-Hub-Signature-256 is missing or is not the body's signature with the secret"
EMPTY = "the body: Invalid JSON: EOF while parsing a value at line 1 column 0"


@pytest.mark.parametrize(
    ("body", "headers", "delivery"),
    [
        pytest.param(payload("github-push.json"), None, Push(HELLO_WORLD), id="push"),
        pytest.param(payload("github-push-tag-deleted.json"), None, Push(TAG_DELETED), id="tag deleted"),
        pytest.param(
            payload("github-push.json"),
            {"X-GitHub-Delivery": ""},
            Push(replace(HELLO_WORLD, delivery=None)),
            id="push without a delivery id",
        ),
        pytest.param(
            payload("github-push.json"),
            {"content-type": "application/json; charset=utf-8"},
            Push(HELLO_WORLD),
            id="push, JSON with a charset",
        ),
        pytest.param(payload("github-ping.json"), {"X-GitHub-Event": "ping"}, Ignored("ping"), id="ping"),
        pytest.param(b"{}", {"X-GitHub-Event": "issues"}, Ignored("issues"), id="another event"),
        pytest.param(b"", {"X-GitHub-Event": "ping"}, Ignored("ping"), id="ping, empty body"),
        pytest.param(
            payload("github-push.json"),
            {"X-Hub-Signature-256": sign(payload("github-push.json"), b"wrong")},
            Rejected(401, NOT_SIGNED),
            id="wrong secret",
        ),
        pytest.param(
            payload("github-ping.json"),
            {"X-GitHub-Event": "ping", "X-Hub-Signature-256": ""},
            Rejected(401, NOT_SIGNED),
            id="ping without a signature",
        ),
        pytest.param(
            payload("github-push.json"),
            {"X-Hub-Signature": sign(payload("github-push.json"), digest="sha1"), "X-Hub-Signature-256": ""},
            Rejected(401, NOT_SIGNED),
            id="only the sha1 signature",
        ),
        pytest.param(b"", None, Rejected(400, f"{NOT_A_PUSH}: {EMPTY}"), id="empty body"),
        pytest.param(b"\xff{}", None, None, id="not UTF-8"),
        pytest.param(
            b"[]", None, Rejected(400, f"{NOT_A_PUSH}: the body: Input should be an object"), id="a list"
        ),
        pytest.param(b"[" * 100_000, None, None, id="deeply nested"),
        pytest.param(
            b'{"ref": "refs/heads/main"}',
            None,
            Rejected(400, f"{NOT_A_PUSH}: repository: Field required"),
            id="no repository",
        ),
        pytest.param(
            b'{"ref": "main", "repository": {}}',
            None,
            Rejected(400, f"{NOT_A_PUSH}: ref: String should match pattern '^refs/\\S+$'"),
            id="a short ref",
        ),
        pytest.param(
            b'{"ref": 7, "repository": {"clone_url": 7}}',
            None,
            Rejected(
                400,
                f"{NOT_A_PUSH}: ref: Input should be a valid string; "
                "repository.clone_url: Input should be a valid string",
            ),
            id="numbers",
        ),
        pytest.param(
            b"payload=%7B%7D",
            {"Content-Type": "application/x-www-form-urlencoded"},
            Rejected(415, "set the webhook's content type to application/json"),
            id="sent as a form",
        ),
        pytest.param(b"{}", {"X-GitHub-Event": ""}, Rejected(400, "no X-GitHub-Event header"), id="no event"),
        pytest.param(
            b"payload=%7B%7D",
            {"Content-Type": "application/x-www-form-urlencoded", "X-GitHub-Event": "ping"},
            Rejected(415, "set the webhook's content type to application/json"),
            id="ping sent as a form",
        ),
    ],
)
def test_github_delivery(body: bytes, headers: dict[str, str] | None, delivery: object) -> None:
    headers = github(body) | (headers or {})
    if delivery is None:  # only the status: the parser's message may change
        result = read_github(headers, body, SECRET)
        assert isinstance(result, Rejected)
        assert result.status == 400
        return
    assert read_github(headers, body, SECRET) == delivery


def test_github_header_names_in_any_case() -> None:
    body = payload("github-push.json")
    headers = {name.lower(): value for name, value in github(body).items()}
    assert read_github(headers, body, SECRET) == Push(HELLO_WORLD)
    headers = {name.upper(): value for name, value in github(body).items()}
    assert read_github(headers, body, SECRET) == Push(HELLO_WORLD)


def gitlab(event: str | None = "Push Hook", **headers: str) -> dict[str, str]:
    sent = {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/17.4.0",
        "X-Gitlab-Instance": "https://gitlab.example.com",
        "X-Gitlab-Webhook-UUID": "0b64fc49-3a8c-4b2d-a3d3-fbe2d1e1bd62",
        "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e",
        "Idempotency-Key": "f5e5f430-f57b-4e6e-9fac-d9128cd7232f",
        "X-Gitlab-Token": SECRET.decode(),
    }
    if event is not None:
        sent["X-Gitlab-Event"] = event
    return sent | headers


DIASPORA = PushEvent(
    provider="gitlab",
    delivery="f5e5f430-f57b-4e6e-9fac-d9128cd7232f",
    repository="mike/diaspora",
    urls=(
        "http://example.com/mike/diaspora.git",
        "git@example.com:mike/diaspora.git",
        "http://example.com/mike/diaspora",
    ),
    ref="refs/heads/master",
    after="da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
    default_branch="master",
)
EXAMPLE_TAG = PushEvent(
    provider="gitlab",
    delivery="f5e5f430-f57b-4e6e-9fac-d9128cd7232f",
    repository="jsmith/example",
    urls=(
        "http://example.com/jsmith/example.git",
        "git@example.com:jsmith/example.git",
        "http://example.com/jsmith/example",
    ),
    ref="refs/tags/v1.0.0",
    after="82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
    default_branch="master",
)


@pytest.mark.parametrize(
    ("body", "headers", "delivery"),
    [
        pytest.param(payload("gitlab-push.json"), gitlab(), Push(DIASPORA), id="push"),
        pytest.param(
            payload("gitlab-tag-push.json"), gitlab("Tag Push Hook"), Push(EXAMPLE_TAG), id="tag push"
        ),
        pytest.param(
            payload("gitlab-push.json"),
            gitlab(**{"Idempotency-Key": ""}),
            Push(replace(DIASPORA, delivery="13792a34-cac6-4fda-95a8-c58e00a3954e")),
            id="before GitLab 17.4: no Idempotency-Key",
        ),
        pytest.param(
            payload("gitlab-push.json"),
            gitlab(**{"Idempotency-Key": "", "X-Gitlab-Event-UUID": ""}),
            Push(replace(DIASPORA, delivery=None)),
            id="no delivery id",
        ),
        pytest.param(payload("gitlab-issue.json"), gitlab("Issue Hook"), Ignored("Issue Hook"), id="issue"),
        pytest.param(b"", gitlab("Issue Hook"), Ignored("Issue Hook"), id="issue, empty body"),
        pytest.param(
            payload("gitlab-push.json"),
            gitlab(**{"X-Gitlab-Token": "wrong"}),
            Rejected(401, "X-Gitlab-Token is missing or is not the secret"),
            id="wrong token",
        ),
        pytest.param(
            payload("gitlab-issue.json"),
            gitlab("Issue Hook", **{"X-Gitlab-Token": ""}),
            Rejected(401, "X-Gitlab-Token is missing or is not the secret"),
            id="issue without a token",
        ),
        pytest.param(
            payload("gitlab-push.json"),
            gitlab(**{"X-Hub-Signature-256": sign(payload("gitlab-push.json")), "X-Gitlab-Token": ""}),
            Rejected(401, "X-Gitlab-Token is missing or is not the secret"),
            id="a GitHub signature",
        ),
        pytest.param(
            b"",
            gitlab(),
            Rejected(400, f"not a GitLab push event: {EMPTY}"),
            id="empty body",
        ),
        pytest.param(
            b'{"ref": "refs/heads/main"}',
            gitlab(),
            Rejected(400, "not a GitLab push event: project: Field required"),
            id="no project",
        ),
        pytest.param(
            payload("gitlab-push.json"),
            gitlab(**{"Content-Type": "text/plain"}),
            Rejected(415, "GitLab sends JSON"),
            id="not JSON",
        ),
        pytest.param(b"{}", gitlab(None), Rejected(400, "no X-Gitlab-Event header"), id="no event"),
    ],
)
def test_gitlab_delivery(body: bytes, headers: dict[str, str], delivery: object) -> None:
    assert read_gitlab(headers, body, SECRET) == delivery


def test_a_delivery_to_the_other_endpoint_is_not_genuine() -> None:
    github_body = payload("github-push.json")
    assert read_gitlab(github(github_body), github_body, SECRET) == Rejected(
        401, "X-Gitlab-Token is missing or is not the secret"
    )
    gitlab_body = payload("gitlab-push.json")
    assert isinstance(read_github(gitlab(), gitlab_body, SECRET), Rejected)


# Which ServiceBuilds a push concerns

MAIN = PushEvent(
    provider="github",
    delivery=None,
    repository="Shop/API",
    urls=(
        "https://github.com/Shop/API.git",
        "git@github.com:Shop/API.git",
        "git://github.com/Shop/API.git",
        "https://github.com/Shop/API",
    ),
    ref="refs/heads/main",
    after="ec26c3e57ca3a959ca5aad62de7213c562f8c821",
    default_branch="main",
)
FEATURE = replace(MAIN, ref="refs/heads/feature/x")
TAG = replace(MAIN, ref="refs/tags/v1.2.0")
NOTE = replace(MAIN, ref="refs/notes/commits")
UNKNOWN_DEFAULT = replace(MAIN, ref="refs/heads/develop", default_branch=None)
UNPARSED_URLS = replace(MAIN, urls=("not a URL", "https://github.com/Shop/API.git"))


@pytest.mark.parametrize(
    ("event", "url", "revision", "concerned"),
    [
        (MAIN, "https://github.com/Shop/API.git", "main", True),
        (MAIN, "https://GitHub.com/shop/api.git", "main", True),
        (MAIN, "git@github.com:Shop/API.git", "main", True),
        (MAIN, "ssh://git@github.com/Shop/API", "main", True),
        (MAIN, "https://github.com/Shop/API.git", "refs/heads/main", True),
        (MAIN, "https://github.com/Shop/API.git", None, True),
        (MAIN, "https://github.com/Shop/API.git", "HEAD", True),
        (MAIN, "https://github.com/Shop/API.git", "develop", False),
        (MAIN, "https://github.com/Shop/API.git", "refs/tags/main", False),
        (MAIN, "https://github.com/Shop/API.git", "heads/main", False),
        (MAIN, "https://github.com/Shop/API.git", "ec26c3e57ca3a959ca5aad62de7213c562f8c821", False),
        (MAIN, "https://github.com/Shop/API.git", "ec26c3e", False),
        (MAIN, "https://github.com/Shop/API-v2.git", "main", False),
        (MAIN, "https://gitlab.com/Shop/API.git", "main", False),
        (MAIN, "https://github.example.com/Shop/API.git", "main", False),
        (MAIN, "not a URL", "main", False),
        (FEATURE, "https://github.com/Shop/API.git", "feature/x", True),
        (FEATURE, "https://github.com/Shop/API.git", "refs/heads/feature/x", True),
        (FEATURE, "https://github.com/Shop/API.git", "x", False),
        (FEATURE, "https://github.com/Shop/API.git", None, False),
        (TAG, "https://github.com/Shop/API.git", "v1.2.0", True),
        (TAG, "https://github.com/Shop/API.git", "refs/tags/v1.2.0", True),
        (TAG, "https://github.com/Shop/API.git", "v1.2", False),
        (TAG, "https://github.com/Shop/API.git", None, False),
        (NOTE, "https://github.com/Shop/API.git", "refs/notes/commits", True),
        (NOTE, "https://github.com/Shop/API.git", "commits", False),
        (NOTE, "https://github.com/Shop/API.git", None, False),
        (UNKNOWN_DEFAULT, "https://github.com/Shop/API.git", None, True),
        (UNPARSED_URLS, "git@github.com:Shop/API.git", "main", True),
    ],
)
def test_which_servicebuilds_a_push_concerns(
    event: PushEvent, url: str, revision: str | None, concerned: bool
) -> None:
    assert event.concerns(url, revision) is concerned


def test_a_push_names_its_branch_or_tag() -> None:
    assert (MAIN.branch, MAIN.tag, MAIN.deleted) == ("main", None, False)
    assert (TAG.branch, TAG.tag) == (None, "v1.2.0")
    assert (NOTE.branch, NOTE.tag) == (None, None)
    assert TAG_DELETED.deleted
    assert MAIN.delivery_key is None
    assert HELLO_WORLD.delivery_key == "github:72d3162e-cc78-11e3-81ab-4c9367dc0958"


def test_the_documented_payloads_name_one_repository_each() -> None:
    assert HELLO_WORLD.repository_keys == {"github.com/codertocat/hello-world"}
    assert DIASPORA.repository_keys == {"example.com/mike/diaspora"}


# The delivery log


def test_a_delivery_is_acted_on_once_within_the_window() -> None:
    log = DeliveryLog(capacity=10, window=60.0)
    assert log.first("github:a", now=0.0)
    assert not log.first("github:a", now=1.0)
    assert log.first("gitlab:a", now=1.0)
    assert not log.first("github:a", now=59.9)
    assert log.first("github:a", now=60.0)


def test_a_forgotten_delivery_is_acted_on_again() -> None:
    log = DeliveryLog()
    assert log.first("github:a", now=0.0)
    log.forget("github:a")
    log.forget("github:never-seen")
    assert log.first("github:a", now=1.0)


def test_the_log_holds_at_most_its_capacity() -> None:
    log = DeliveryLog(capacity=3, window=60.0)
    for index, key in enumerate("abcd"):
        assert log.first(key, now=float(index))
    assert len(log) == 3
    assert log.first("a", now=5.0)  # the oldest made room
    assert not log.first("d", now=5.0)
