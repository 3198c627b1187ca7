"""The push webhook receiver: an HTTP server (aiohttp.web) for GitHub's and GitLab's push webhooks.

`POST /hooks/github` and `POST /hooks/gitlab`, one path per sender: each verifies deliveries its own way,
and a webhook pointed at the wrong one fails at once with 401. What a delivery says is read by the pure
`webhooks` module; this one owns the port, the body limit, the secret file, the log of deliveries seen and
the deadline of the answer. A new genuine push goes to `on_push`, which finds and marks the ServiceBuilds
it concerns and returns how many; the handlers wire it to the Kubernetes side and start and stop the server.

Answers, each a JSON object with `result` and `detail`:

- 202 `triggered`: `on_push` returned in time; `matched` ServiceBuilds will resolve their revision again.
- 202 `accepted`: `on_push` still runs after `answer_within` seconds (GitHub and GitLab give up after 10):
  it goes on in the background and the sender hears it was accepted. Its outcome is logged.
- 202 `duplicate`: a delivery with this id was acted on already (a redelivery, or a replay).
- 202 `ignored`: a genuine delivery of another event than a push (GitHub's `ping`, …).
- 400 malformed, 401 not genuine (bad or missing signature or token), 415 not JSON: nothing done.
- 413: a body over 1 MiB, refused from its Content-Length before it is read.
- 503: the secret file cannot be read, or `on_push` failed; the delivery id is forgotten, so that the
  sender's "redeliver" acts on it.
- 404 another path, 405 another method than POST (aiohttp's own answers).
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Self

from aiohttp import web

from servicebuild import webhooks
from servicebuild.config import Settings
from servicebuild.http_site import Site
from servicebuild.webhooks import Delivery, DeliveryLog, Ignored, Push, PushEvent, Rejected

logger = logging.getLogger(__name__)

OnPush = Callable[[PushEvent], Awaitable[int]]
"""Finds the ServiceBuilds a genuine push concerns (`PushEvent.concerns`) among those that opted into
polling, records on each that it is to resolve its revision again, and returns how many."""

MAX_BODY_BYTES = 1024 * 1024
ANSWER_WITHIN_SECONDS = 8.0
"""How long a delivery waits for `on_push` before it is answered anyway: GitHub and GitLab wait 10 s."""
PATHS = {"github": "/hooks/github", "gitlab": "/hooks/gitlab"}
_PROVIDER_NAMES = {"github": "GitHub", "gitlab": "GitLab"}

Reader = Callable[[Mapping[str, str], bytes, bytes], Delivery]


class WebhookSecretError(Exception):
    """The secret file cannot be read, or holds nothing."""


def read_secret(path: Path) -> bytes:
    """The webhooks' secret: the file's content without surrounding whitespace (a Secret made with
    `--from-file` often ends in a newline). Never empty: an empty key would let anyone sign."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise WebhookSecretError(f"cannot read the webhook secret file {path}: {exc.strerror}") from exc
    if not secret:
        raise WebhookSecretError(f"the webhook secret file {path} is empty")
    return secret


class WebhookServer(Site):
    """The receiver: `await start()` at the operator's start-up, `await stop()` at its clean-up (or
    `async with`). The secret file is read at start (a missing secret fails the start) and again for every
    delivery, so that a changed Secret applies without a restart."""

    name = "the webhook receiver"

    def __init__(
        self,
        on_push: OnPush,
        secret_file: Path,
        host: str | None = None,
        port: int = 8082,
        *,
        answer_within: float = ANSWER_WITHIN_SECONDS,
    ) -> None:
        super().__init__(host, port)
        self._on_push = on_push
        self._secret_file = secret_file
        self._answer_within = answer_within
        self._deliveries = DeliveryLog()
        self._recordings: set[asyncio.Task[int | None]] = set()

    @classmethod
    def from_settings(cls, settings: Settings, on_push: OnPush) -> Self | None:
        """The receiver the settings ask for; None when SERVICEBUILD_WEBHOOK_ADDRESS is unset."""
        listen = settings.webhook_listen()
        if listen is None:
            return None
        if settings.webhook_secret_file is None:  # Settings refuses an address without one
            raise ValueError("SERVICEBUILD_WEBHOOK_SECRET_FILE is unset")
        host, port = listen
        return cls(on_push, settings.webhook_secret_file, host, port)

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(PATHS["github"], self._github)
        app.router.add_post(PATHS["gitlab"], self._gitlab)
        return app

    async def start(self) -> None:
        """Listen; raises WebhookSecretError without a readable secret, OSError when the port is taken."""
        read_secret(self._secret_file)
        await super().start()
        logger.info(
            "Receiving push webhooks on port %d: %s and %s", self.port, PATHS["github"], PATHS["gitlab"]
        )

    async def stop(self) -> None:
        """Stop listening; recordings still running in the background are cancelled."""
        for recording in self._recordings:
            recording.cancel()
        await asyncio.gather(*self._recordings, return_exceptions=True)
        await super().stop()

    async def _github(self, request: web.Request) -> web.Response:
        return await self._receive(request, "github", webhooks.read_github)

    async def _gitlab(self, request: web.Request) -> web.Response:
        return await self._receive(request, "gitlab", webhooks.read_gitlab)

    async def _receive(self, request: web.Request, provider: str, read: Reader) -> web.Response:
        sender = _PROVIDER_NAMES[provider]
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _answer(413, "rejected", f"the body is over {MAX_BODY_BYTES} bytes")
        try:
            body = await request.read()  # a body without Content-Length stops at client_max_size
        except web.HTTPRequestEntityTooLarge:
            return _answer(413, "rejected", f"the body is over {MAX_BODY_BYTES} bytes")
        try:
            # A Secret volume is a tmpfs and the file a few bytes: read on the loop, never behind the
            # worker threads, which reconciles may keep busy for longer than a sender waits.
            secret = read_secret(self._secret_file)
        except WebhookSecretError as exc:
            logger.error("A %s webhook delivery could not be verified: %s", sender, exc)  # noqa: TRY400 - the message says it all
            return _answer(503, "unavailable", "the receiver cannot read its secret")
        match read(request.headers, body, secret):
            case Rejected(status, reason):
                log = logger.warning if status == 401 else logger.info
                log(
                    "A %s webhook delivery from %s was refused (%d): %s",
                    sender,
                    request.remote,
                    status,
                    reason,
                )
                return _answer(status, "rejected", reason)
            case Ignored(event):
                logger.debug("A %s webhook delivery of a %r event was ignored", sender, event)
                return _answer(202, "ignored", f"{event!r} events are not acted on, only pushes")
            case Push(event):
                return await self._push(sender, event)

    async def _push(self, sender: str, event: PushEvent) -> web.Response:
        key = event.delivery_key
        if key is not None and not self._deliveries.first(key, time.monotonic()):
            logger.info("%s delivered push %s again: it was acted on already", sender, event.delivery)
            return _answer(202, "duplicate", "this delivery was acted on already")
        recording = asyncio.create_task(
            self._record(sender, event, key), name=f"webhook push to {event.repository} {event.ref}"
        )
        self._recordings.add(recording)
        recording.add_done_callback(self._recordings.discard)
        done, _ = await asyncio.wait({recording}, timeout=self._answer_within)
        if not done:
            return _answer(202, "accepted", "the ServiceBuilds are still being marked", matched=None)
        matched = None if recording.cancelled() else recording.result()
        if matched is None:
            return _answer(503, "failed", "the operator could not act on it; deliver it again")
        return _answer(
            202, "triggered", f"{matched} ServiceBuild(s) will resolve their revision", matched=matched
        )

    async def _record(self, sender: str, event: PushEvent, key: str | None) -> int | None:
        """`on_push`, and what came of it in the log; None when it failed (the delivery is forgotten)."""
        try:
            matched = await self._on_push(event)
        except Exception:
            # Whatever on_push raises, the sender hears 503 and its redelivery is acted on.
            if key is not None:
                self._deliveries.forget(key)
            logger.exception("Acting on a %s push to %s %s failed", sender, event.repository, event.ref)
            return None
        logger.info(
            "%s push to %s %s (%s, delivery %s): %d ServiceBuild(s) to resolve again",
            sender,
            event.repository,
            event.ref,
            event.after[:12],
            event.delivery,
            matched,
        )
        return matched


def _answer(status: int, result: str, detail: str, **more: object) -> web.Response:
    return web.json_response({"result": result, "detail": detail, **more}, status=status)
