"""What the integration tests share: the ConfigMap context, a ServiceBuild spec, and reading the result.

Every test builds in namespace `shop`, from a ConfigMap context, to a registry it is given; where modules
differ (the ConfigMap's name and files, the image's tag) the helpers take it as a parameter.
"""

from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import kmock
import pytest
from cluster import SERVICEBUILDS, Cluster, condition, eventually

from support.oci_registry import OCI_MANIFEST, RunningRegistry

NAMESPACE = "shop"
CONTEXT = "context"
"""The ConfigMap a ServiceBuild builds from unless a module names another."""


def build_context_fixture(
    files: dict[str, str], *, name: str = CONTEXT
) -> Callable[[Cluster], Coroutine[Any, Any, None]]:
    """An autouse fixture that creates the ConfigMap `name` holding `files` before each test.

    Assign it in a module as `build_context = build_context_fixture({...})`.
    """

    @pytest.fixture(autouse=True)
    async def build_context(cluster: Cluster) -> None:
        await cluster.create_configmap(NAMESPACE, name, files)

    return build_context


def spec(
    registry: RunningRegistry, name: str, *, context: str = CONTEXT, tag: str = "1", **extra: Any
) -> dict[str, Any]:
    """A ServiceBuild spec: the ConfigMap `context`, pushed to `<registry>/shop/<name>:<tag>`, and `extra`."""
    return {
        "source": {"configMap": {"name": context}},
        "output": {"image": f"{registry.host}/shop/{name}:{tag}"},
        **extra,
    }


def status_of(cluster: Cluster, name: str) -> dict[str, Any]:
    status: dict[str, Any] = cluster.servicebuild(NAMESPACE, name).get("status", {})
    return status


def with_condition(
    cluster: Cluster, name: str, condition_type: str, status: str = "True", *, generation: int | None = None
) -> Any:
    """The ServiceBuild if its condition has `status` (for `generation`, when given), else None."""
    body = cluster.servicebuild(NAMESPACE, name)
    found = condition(body, condition_type)
    if not found or found["status"] != status:
        return None
    if generation is not None and found.get("observedGeneration") != generation:
        return None
    return body


def ready(cluster: Cluster, name: str, generation: int | None = None) -> Any:
    """The ServiceBuild if Ready is True (for `generation`, when given), else None."""
    return with_condition(cluster, name, "Ready", generation=generation)


def stalled(cluster: Cluster, name: str) -> Any:
    """The ServiceBuild if Stalled is True, else None."""
    return with_condition(cluster, name, "Stalled")


async def after_resyncs(cluster: Cluster, count: int = 2) -> None:
    """Wait until the operator has listed ServiceBuilds `count` more times (its resync ticks)."""
    resyncs = len(cluster.requests(kmock.action.LIST, SERVICEBUILDS))
    await eventually(lambda: len(cluster.requests(kmock.action.LIST, SERVICEBUILDS)) >= resyncs + count)


def served(
    registry: RunningRegistry, repository: str, reference: str, accept: str = OCI_MANIFEST
) -> httpx.Response:
    """What the registry itself serves: the ground truth for status."""
    response = httpx.get(f"{registry.url}/v2/{repository}/manifests/{reference}", headers={"Accept": accept})
    response.raise_for_status()
    return response
