"""The metrics server: an HTTP server (aiohttp.web) for Prometheus and the kubelet's readiness probe.

`GET /metrics`: the registry it is given, in Prometheus's text format. `GET /readyz`: 200 `ok` when the
`ready` callable it is given says so, else 503 `not ready`. The handlers start it at the operator's start-up
and stop it at its clean-up; it knows nothing of the cluster.
"""

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from servicebuild.http_site import Site

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
READY_PATH = "/readyz"


class MetricsServer(Site):
    """`await start()` at the operator's start-up, `await stop()` at its clean-up (or `async with`)."""

    name = "the metrics server"

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        host: str | None = None,
        port: int = 8081,
    ) -> None:
        super().__init__(host, port)
        self._registry = registry
        self._ready = ready

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get(METRICS_PATH, self._metrics)
        app.router.add_get(READY_PATH, self._readyz)
        return app

    async def start(self) -> None:
        """Listen; raises OSError when the port is taken."""
        await super().start()
        logger.info("Serving metrics on port %d: %s and %s", self.port, METRICS_PATH, READY_PATH)

    async def _metrics(self, _: web.Request) -> web.Response:
        # Collecting reads a few locks and /proc: quick enough for the event loop.
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _readyz(self, _: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ok")
        return web.Response(text="not ready", status=503)
