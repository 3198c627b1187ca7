"""We test the metrics server against a real server on a loopback port:

- GET /metrics answers the registry it was given in Prometheus's text format, with its content type;
  what is recorded after the start shows in the next scrape;
- GET /readyz answers 200 "ok" while the readiness callable says so, 503 "not ready" otherwise, asked on
  every request;
- other methods and paths get aiohttp's 405 and 404; a port already taken fails the start with OSError.
"""

from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from servicebuild.metrics_server import MetricsServer
from support.oci_registry import free_port


class Readiness:
    def __init__(self) -> None:
        self.ready = False

    def __call__(self) -> bool:
        return self.ready


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
async def server(registry: CollectorRegistry, readiness: Readiness) -> AsyncIterator[MetricsServer]:
    async with MetricsServer(registry, readiness, "127.0.0.1", free_port()) as running:
        yield running


async def get(server: MetricsServer, path: str, method: str = "GET") -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"http://127.0.0.1:{server.port}{path}") as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def test_metrics_are_the_registry_in_the_text_format(
    server: MetricsServer, registry: CollectorRegistry
) -> None:
    builds = Counter("servicebuild_builds_total", "Builds ended.", ["result"], registry=registry)
    builds.labels("Succeeded").inc(3)

    status, content_type, body = await get(server, "/metrics")

    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    families = {family.name: family for family in text_string_to_metric_families(body)}
    assert families["servicebuild_builds"].type == "counter"
    assert [(s.name, s.labels, s.value) for s in families["servicebuild_builds"].samples] == [
        ("servicebuild_builds_total", {"result": "Succeeded"}, 3.0)
    ]


async def test_readiness_follows_the_callable(server: MetricsServer, readiness: Readiness) -> None:
    assert (await get(server, "/readyz"))[::2] == (503, "not ready")
    readiness.ready = True
    assert (await get(server, "/readyz"))[::2] == (200, "ok")


async def test_other_methods_and_paths_are_refused(server: MetricsServer) -> None:
    assert (await get(server, "/metrics", "POST"))[0] == 405
    assert (await get(server, "/healthz"))[0] == 404


async def test_a_taken_port_fails_the_start(server: MetricsServer, registry: CollectorRegistry) -> None:
    with pytest.raises(OSError, match="address already in use"):
        await MetricsServer(registry, bool, "127.0.0.1", server.port).start()
