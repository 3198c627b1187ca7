"""We test the operator's metrics with the real operator process, KMock's API and a real registry, scraping
its /metrics as Prometheus would, over HTTP, while builds queue, succeed and fail (one build slot):

- while one build runs and another waits, the namespace's running and queued gauges read 1 and 1, and
  /readyz answers 200;
- once both ended, each build is counted once by result, reason (as its conditions say) and trigger; the
  duration histogram counts both; each Job created counts a queue wait and a reaction; the cache-hit ratio
  is the successful build's, the image size its status's; running and queued read 0;
- an operator restarted afterwards counts none of those builds again, and reports the image size again
  once it has read the ServiceBuilds.
"""

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cluster import Cluster, condition, eventually
from helpers import NAMESPACE, build_context_fixture, ready, spec, stalled, status_of
from kubelet import Kubelet
from operator_process import OperatorProcess
from prometheus_client.parser import text_string_to_metric_families

from support.oci_registry import RunningRegistry

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]
"""Per sample name (`servicebuild_builds_total`, `..._bucket`), the value of each label set."""

build_context = build_context_fixture({"Dockerfile": "FROM scratch\n"})


@pytest.fixture
def operator_env(operator_env: dict[str, str]) -> dict[str, str]:
    return {**operator_env, "SERVICEBUILD_MAX_RUNNING_BUILDS": "1"}


class Scraper:
    """Prometheus's side: GET /metrics and /readyz of the operator."""

    def __init__(self, address: str) -> None:
        self.url = f"http://{address}"
        self.text = ""

    async def scrape(self) -> Samples:
        # Asynchronously: the emulator the operator talks to runs on this event loop.
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{self.url}/metrics")
        response.raise_for_status()
        self.text = response.text
        samples: Samples = {}
        for family in text_string_to_metric_families(self.text):
            for sample in family.samples:
                samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
        return samples

    async def until(self, check: Callable[[Samples], bool], within: float = 60.0) -> Samples:
        """Scrape until `check` holds: the operator records a figure just after it writes what it shows."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            try:
                samples = await self.scrape()
            except httpx.TransportError:  # not listening yet
                samples = {}
            if check(samples):
                return samples
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the metrics did not get there within {within}s:\n{self.text}")
            await asyncio.sleep(0.2)

    async def readiness(self) -> int:
        async with httpx.AsyncClient(timeout=10) as client:
            return (await client.get(f"{self.url}/readyz")).status_code


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get(name, {}).get(frozenset(labels.items()))


def built(result: str, reason: str) -> dict[str, str]:
    return {"namespace": NAMESPACE, "result": result, "reason": reason, "trigger": "Created"}


def in_namespace(samples: Samples, running: float, queued: float) -> bool:
    return (
        value(samples, "servicebuild_builds_running", namespace=NAMESPACE) == running
        and value(samples, "servicebuild_builds_queued", namespace=NAMESPACE) == queued
    )


async def test_metrics_count_builds_that_queue_succeed_and_fail(
    cluster: Cluster,
    kubelet: Kubelet,
    operator: OperatorProcess,
    oci_registry: RunningRegistry,
    operator_env: dict[str, str],
    tmp_path: Path,
) -> None:
    scraper = Scraper(operator_env["SERVICEBUILD_METRICS_ADDRESS"])
    kubelet.plan("first", "hold")
    kubelet.plan("second", "hold")
    await cluster.create_servicebuild(NAMESPACE, "first", spec(oci_registry, "first"))
    await eventually(lambda: len(kubelet.held) == 1)
    await cluster.create_servicebuild(NAMESPACE, "second", spec(oci_registry, "second"))
    await eventually(lambda: status_of(cluster, "second").get("phase") == "Queued")

    await scraper.until(lambda samples: in_namespace(samples, running=1, queued=1))
    assert await scraper.readiness() == 200

    await kubelet.release(next(iter(kubelet.held)))
    await eventually(lambda: ready(cluster, "first"))
    await eventually(lambda: any(job.startswith("second") for job in kubelet.held))
    await kubelet.release(next(iter(kubelet.held)), "fail")
    failed = await eventually(lambda: stalled(cluster, "second"))
    reason = condition(failed, "Stalled")["reason"]

    samples = await scraper.until(
        lambda samples: (
            in_namespace(samples, running=0, queued=0)
            and value(samples, "servicebuild_builds_total", **built("Failed", reason)) is not None
        )
    )
    (tmp_path / "metrics.txt").write_text(scraper.text)  # kept by pytest for a look after the run
    first = status_of(cluster, "first")
    assert value(samples, "servicebuild_builds_total", **built("Succeeded", "BuildSucceeded")) == 1
    assert value(samples, "servicebuild_builds_total", **built("Failed", reason)) == 1
    assert sum(samples["servicebuild_builds_total"].values()) == 2
    assert sum(samples["servicebuild_build_duration_seconds_count"].values()) == 2
    assert value(samples, "servicebuild_build_queue_wait_seconds_count") == 2
    assert value(samples, "servicebuild_reaction_seconds_count") == 2
    assert value(samples, "servicebuild_cache_hit_ratio_count") == 1
    cache = first["cache"]
    assert value(samples, "servicebuild_cache_hit_ratio_sum") == pytest.approx(
        cache["cachedSteps"] / cache["totalSteps"]
    )
    sizes = samples["servicebuild_image_size_bytes"]
    assert sizes == {
        frozenset({"namespace": NAMESPACE, "servicebuild": "first"}.items()): first["output"]["sizeBytes"]
    }
    assert value(samples, "process_resident_memory_bytes")

    await asyncio.to_thread(operator.stop)
    operator.start()
    samples = await scraper.until(lambda samples: "servicebuild_image_size_bytes" in samples)
    assert "servicebuild_builds_total" not in samples, "a restarted operator counts no build that had ended"
    assert in_namespace(samples, running=0, queued=0)
