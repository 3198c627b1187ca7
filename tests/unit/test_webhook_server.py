"""The push webhook receiver (servicebuild.webhook_server), a real aiohttp server on a loopback port, with a
fake `on_push` in place of the operator's.

We test these aspects:
- a signed GitHub push and a GitLab push with its token are answered 202 and handed to `on_push` once,
  read as the pure module reads them; the answer says how many ServiceBuilds matched;
- a wrong or missing signature or token is 401 and `on_push` is not called;
- a delivery id seen before is 202 `duplicate` and `on_push` is not called again, for either sender;
  the same id from the other sender is another delivery;
- ping and other events are 202 `ignored`; a genuine delivery with a malformed body is 400;
- a body over 1 MiB is 413: from its Content-Length, answered before the body is sent; sent chunked,
  when the limit is passed; a body of exactly 1 MiB is read;
- another method is 405, another path 404;
- a slow `on_push` does not hold the answer: 202 `accepted` within the deadline, and it goes on in the
  background (a replay meanwhile is a duplicate); the server's stop cancels it;
- a failing `on_push` is 503 and the delivery is forgotten, so that a redelivery is acted on;
- the secret file: surrounding whitespace ignored; read for every delivery (a rotated secret applies at
  once); a missing or empty file fails the start, and a delivery while it is unreadable is 503;
- the settings: no receiver without SERVICEBUILD_WEBHOOK_ADDRESS, else one on its host and port.
"""

import asyncio
import hmac
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from servicebuild.config import Settings
from servicebuild.webhook_server import MAX_BODY_BYTES, WebhookSecretError, WebhookServer
from servicebuild.webhooks import Push, PushEvent, read_github, read_gitlab
from support.oci_registry import free_port

PAYLOADS = Path(__file__).parent / "webhook_payloads"
SECRET = secrets.token_hex(16)
NEXT_SECRET = secrets.token_hex(16)
ANSWER_WITHIN = 0.5
GITHUB_PUSH = (PAYLOADS / "github-push.json").read_bytes()
GITLAB_PUSH = (PAYLOADS / "gitlab-push.json").read_bytes()


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, "sha256").hexdigest()


def github_headers(
    body: bytes, event: str = "push", delivery: str = "d-1", secret: str = SECRET
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(body, secret),
    }


def gitlab_headers(event: str = "Push Hook", delivery: str = "d-1", token: str = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Gitlab-Event": event,
        "Idempotency-Key": delivery,
        "X-Gitlab-Token": token,
    }


@dataclass
class FakeOperator:
    """`on_push`: records each event; held until `release` is set when `hold` is; raises `failure`."""

    matched: int = 2
    hold: bool = False
    failure: Exception | None = None
    events: list[PushEvent] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, event: PushEvent) -> int:
        self.events.append(event)
        self.called.set()
        if self.hold:
            await self.release.wait()
        self.finished.set()
        if self.failure is not None:
            raise self.failure
        return self.matched


@dataclass
class Receiver:
    server: WebhookServer
    operator: FakeOperator
    secret_file: Path
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        async with self.session.post(f"{self.url}{path}", data=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    async def github(self, body: bytes = GITHUB_PUSH, **headers: str) -> tuple[int, Any]:
        return await self.post("/hooks/github", body, github_headers(body) | headers)

    async def gitlab(self, body: bytes = GITLAB_PUSH, **headers: str) -> tuple[int, Any]:
        return await self.post("/hooks/gitlab", body, gitlab_headers() | headers)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text(f"{SECRET}\n")  # as `kubectl create secret --from-file` often leaves it
    return path


@pytest.fixture
async def receiver(secret_file: Path) -> AsyncIterator[Receiver]:
    operator = FakeOperator()
    server = WebhookServer(operator, secret_file, "127.0.0.1", free_port(), answer_within=ANSWER_WITHIN)
    async with server, aiohttp.ClientSession() as session:
        yield Receiver(server, operator, secret_file, session)


async def test_a_signed_github_push_is_handed_on_once(receiver: Receiver) -> None:
    status, answer = await receiver.github()
    assert (status, answer["result"], answer["matched"]) == (202, "triggered", 2)
    expected = read_github(github_headers(GITHUB_PUSH), GITHUB_PUSH, SECRET.encode())
    assert isinstance(expected, Push)
    assert receiver.operator.events == [expected.event]


async def test_a_gitlab_push_with_its_token_is_handed_on_once(receiver: Receiver) -> None:
    status, answer = await receiver.gitlab()
    assert (status, answer["result"], answer["matched"]) == (202, "triggered", 2)
    expected = read_gitlab(gitlab_headers(), GITLAB_PUSH, SECRET.encode())
    assert isinstance(expected, Push)
    assert receiver.operator.events == [expected.event]


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/hooks/github", {"X-Hub-Signature-256": sign(GITHUB_PUSH, "wrong")}),
        ("/hooks/github", {"X-Hub-Signature-256": ""}),
        ("/hooks/github", {"X-Hub-Signature-256": sign(GITHUB_PUSH)[:-8]}),
        ("/hooks/gitlab", {"X-Gitlab-Token": "wrong"}),
        ("/hooks/gitlab", {"X-Gitlab-Token": ""}),
    ],
    ids=["github wrong", "github missing", "github truncated", "gitlab wrong", "gitlab missing"],
)
async def test_a_delivery_not_from_the_secrets_holder_is_401(
    receiver: Receiver, path: str, headers: dict[str, str]
) -> None:
    if path == "/hooks/github":
        status, answer = await receiver.github(**headers)
    else:
        status, answer = await receiver.gitlab(**headers)
    assert (status, answer["result"]) == (401, "rejected")
    assert receiver.operator.events == []


async def test_a_replayed_delivery_is_acted_on_once(receiver: Receiver) -> None:
    assert (await receiver.github())[1]["result"] == "triggered"
    status, answer = await receiver.github()
    assert (status, answer["result"]) == (202, "duplicate")
    assert (await receiver.gitlab())[1]["result"] == "triggered"  # the same id from GitLab: another one
    assert (await receiver.gitlab())[1]["result"] == "duplicate"
    assert (await receiver.github(**{"X-GitHub-Delivery": "d-2"}))[1]["result"] == "triggered"
    assert len(receiver.operator.events) == 3


async def test_other_events_are_ignored(receiver: Receiver) -> None:
    ping = (PAYLOADS / "github-ping.json").read_bytes()
    status, answer = await receiver.post("/hooks/github", ping, github_headers(ping, event="ping"))
    assert (status, answer["result"]) == (202, "ignored")
    issue = (PAYLOADS / "gitlab-issue.json").read_bytes()
    status, answer = await receiver.post("/hooks/gitlab", issue, gitlab_headers(event="Issue Hook"))
    assert (status, answer["result"]) == (202, "ignored")
    assert receiver.operator.events == []


async def test_a_genuine_delivery_with_a_malformed_body_is_400(receiver: Receiver) -> None:
    status, answer = await receiver.github(b"")
    assert (status, answer["result"]) == (400, "rejected")
    assert "not a GitHub push event" in answer["detail"]
    assert receiver.operator.events == []


async def test_a_body_over_the_limit_is_refused_before_it_is_sent(receiver: Receiver) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.server.port)
    try:
        writer.write(
            b"POST /hooks/github HTTP/1.1\r\nHost: webhooks\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
            + b"{"
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 413 ")
    assert receiver.operator.events == []


async def test_a_chunked_body_over_the_limit_is_413(receiver: Receiver) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY_BYTES // 65536 + 1):
            yield b" " * 65536

    headers = github_headers(b"")
    async with receiver.session.post(
        f"{receiver.url}/hooks/github", data=chunks(), headers=headers
    ) as response:
        assert response.status == 413
    assert receiver.operator.events == []


async def test_a_body_of_exactly_the_limit_is_read(receiver: Receiver) -> None:
    body = GITHUB_PUSH + b" " * (MAX_BODY_BYTES - len(GITHUB_PUSH))
    status, answer = await receiver.github(body)
    assert (status, answer["result"]) == (202, "triggered")


async def test_another_method_is_405_and_another_path_404(receiver: Receiver) -> None:
    async with receiver.session.get(f"{receiver.url}/hooks/github") as response:
        assert response.status == 405
    async with receiver.session.put(f"{receiver.url}/hooks/gitlab", data=GITLAB_PUSH) as response:
        assert response.status == 405
    async with receiver.session.post(f"{receiver.url}/hooks/bitbucket", data=GITHUB_PUSH) as response:
        assert response.status == 404
    assert receiver.operator.events == []


async def test_a_slow_operator_does_not_hold_the_answer(receiver: Receiver) -> None:
    receiver.operator.hold = True
    started = time.monotonic()
    status, answer = await receiver.github()
    assert time.monotonic() - started < ANSWER_WITHIN + 2.0
    assert (status, answer["result"], answer["matched"]) == (202, "accepted", None)
    assert receiver.operator.called.is_set()
    assert not receiver.operator.finished.is_set()
    assert (await receiver.github())[1]["result"] == "duplicate"  # still being acted on
    receiver.operator.release.set()
    await asyncio.wait_for(receiver.operator.finished.wait(), timeout=5)
    assert len(receiver.operator.events) == 1


async def test_stopping_cancels_what_runs_in_the_background(secret_file: Path) -> None:
    operator = FakeOperator(hold=True)
    server = WebhookServer(operator, secret_file, "127.0.0.1", free_port(), answer_within=0.1)
    async with server, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{server.port}/hooks/github"
        async with session.post(url, data=GITHUB_PUSH, headers=github_headers(GITHUB_PUSH)) as response:
            assert response.status == 202
    assert operator.called.is_set()
    assert not operator.finished.is_set()
    assert server._recordings == set()


async def test_a_failing_operator_is_503_and_the_delivery_is_forgotten(receiver: Receiver) -> None:
    receiver.operator.failure = RuntimeError("the API server is away")
    status, answer = await receiver.github()
    assert (status, answer["result"]) == (503, "failed")
    receiver.operator.failure = None
    status, answer = await receiver.github()
    assert (status, answer["result"]) == (202, "triggered")
    assert len(receiver.operator.events) == 2


async def test_a_rotated_secret_applies_at_once(receiver: Receiver) -> None:
    receiver.secret_file.write_text(f"  {NEXT_SECRET} \n")
    assert (await receiver.github())[0] == 401
    body = GITHUB_PUSH
    status, _ = await receiver.post("/hooks/github", body, github_headers(body, secret=NEXT_SECRET))
    assert status == 202
    assert (await receiver.gitlab(**{"X-Gitlab-Token": NEXT_SECRET}))[0] == 202


async def test_an_unreadable_secret_is_503(receiver: Receiver) -> None:
    receiver.secret_file.unlink()
    status, answer = await receiver.github()
    assert (status, answer["result"]) == (503, "unavailable")
    assert receiver.operator.events == []


@pytest.mark.parametrize("content", [None, "", " \n"], ids=["missing", "empty", "blank"])
async def test_the_start_needs_a_secret(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    server = WebhookServer(FakeOperator(), path, "127.0.0.1", free_port())
    with pytest.raises(WebhookSecretError, match=str(path)):
        await server.start()
    await server.stop()


def test_the_settings_make_the_receiver(monkeypatch: pytest.MonkeyPatch, secret_file: Path) -> None:
    for name in ("SERVICEBUILD_WEBHOOK_ADDRESS", "SERVICEBUILD_WEBHOOK_SECRET_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert WebhookServer.from_settings(Settings(), FakeOperator()) is None
    monkeypatch.setenv("SERVICEBUILD_WEBHOOK_ADDRESS", "127.0.0.1:8082")
    monkeypatch.setenv("SERVICEBUILD_WEBHOOK_SECRET_FILE", str(secret_file))
    server = WebhookServer.from_settings(Settings(), FakeOperator())
    assert server is not None
    assert (server._host, server._port, server._secret_file) == ("127.0.0.1", 8082, secret_file)
