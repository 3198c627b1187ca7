"""What the operator's two HTTP servers share: listening on an aiohttp.web application, stopping, the port."""

from types import TracebackType
from typing import Self

from aiohttp import web

_SHUTDOWN_SECONDS = 5.0


class Site:
    """`await start()` at the operator's start-up, `await stop()` at its clean-up (or `async with`)."""

    name = "the server"
    """How its errors name it."""

    def __init__(self, host: str | None, port: int) -> None:
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        """The routes to serve."""
        raise NotImplementedError

    async def start(self) -> None:
        """Listen; raises OSError when the port is taken."""
        # No access log: each server logs what matters to it, once.
        runner = web.AppRunner(self.application(), access_log=None, shutdown_timeout=_SHUTDOWN_SECONDS)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

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
            raise RuntimeError(f"{self.name} is not listening")
        return int(self._runner.addresses[0][1])
