"""The metrics server: an HTTP server (aiohttp.web) for Prometheus and the kubelet's readiness probe.

`GET /metrics`: the registry it is given, in Prometheus's text format. `GET /readyz`: 200 `ok` when the
`ready` callable it is given says so, else 503 `not ready`. The handlers start it at the operator's start-up
and stop it at its clean-up; it knows nothing of the cluster.
"""

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
READY_PATH = "/readyz"
_SHUTDOWN_SECONDS = 5.0


class MetricsServer:
    """`await start()` at the operator's start-up, `await stop()` at its clean-up (or `async with`)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        host: str | None = None,
        port: int = 8081,
    ) -> None:
        self._registry = registry
        self._ready = ready
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen; raises OSError when the port is taken."""
        app = web.Application()
        app.router.add_get(METRICS_PATH, self._metrics)
        app.router.add_get(READY_PATH, self._readyz)
        # No access log: Prometheus and the kubelet ask every few seconds.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_SECONDS)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        logger.info("Serving metrics on port %d: %s and %s", self.port, METRICS_PATH, READY_PATH)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The port listened on (the one asked for, or the one the system chose for 0)."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the metrics server is not listening")
        return int(self._runner.addresses[0][1])

    async def _metrics(self, _: web.Request) -> web.Response:
        # Collecting reads a few locks and /proc: quick enough for the event loop.
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _readyz(self, _: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ok")
        return web.Response(text="not ready", status=503)
