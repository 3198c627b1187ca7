"""End-to-end: the operator in the kind cluster of `make demo` builds the samples for real.

We test these aspects:
- every sample ServiceBuild is Ready at its current generation, and its output is of that generation;
- status.output.digest is the digest the registry serves for the pushed tag;
- status.output.sizeBytes and layers equal the config plus the layers of the registry's own manifest;
- the runtime image runs: its final stage holds a working binary and nothing else is needed;
- a changed build arg used only in the final stage rebuilds at the new generation, reports cached
  steps in status.cache, and the registry agrees with the new digest and size.

The registry is read over its host port with plain HTTP code written here, independent of the
operator's registry module. Run with `make e2e` (it runs `make demo` first).

Settings, from the environment; the defaults fit `make demo`'s kind cluster:
- E2E_KUBE_CONTEXT: the kubectl context of the cluster running the operator and e2e/samples
  (`kind-servicebuild`);
- E2E_REGISTRY_URL: the samples' registry as this machine reaches it (`http://localhost:5001`);
- E2E_PULL_REGISTRY: the same registry as the cluster's nodes name it when they pull an image
  (`localhost:5001`, the name kind's local-registry guide gives the nodes); empty: the name the image
  was pushed as.
"""

import hashlib
import json
import os
import subprocess
import time
from typing import Any

import httpx
import pytest

from image_names import pull_name, repository_and_tag

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

CONTEXT = os.environ.get("E2E_KUBE_CONTEXT", "kind-servicebuild")
NAMESPACE = "servicebuild-demo"
REGISTRY = os.environ.get("E2E_REGISTRY_URL", "http://localhost:5001")  # kind-registry:5000 on the host
PULL_REGISTRY = os.environ.get("E2E_PULL_REGISTRY", "localhost:5001")
SAMPLES = ["hello", "hello-debug"]
MANIFEST_TYPES = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
]
INDEX_TYPES = {MANIFEST_TYPES[0], MANIFEST_TYPES[2]}


def kubectl(*args: str, timeout: float = 60) -> str:
    command = ["kubectl", "--context", CONTEXT, "-n", NAMESPACE, *args]
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout).stdout


def servicebuild(name: str) -> dict[str, Any]:
    return json.loads(kubectl("get", "servicebuild", name, "-o", "json"))


def wait_ready(name: str, timeout_seconds: int) -> dict[str, Any]:
    """`kubectl wait` also waits while the condition's observedGeneration is behind the object's."""
    kubectl(
        "wait",
        "--for=condition=Ready",
        f"servicebuild/{name}",
        f"--timeout={timeout_seconds}s",
        timeout=timeout_seconds + 30,
    )
    return servicebuild(name)


def get_manifest(repository: str, reference: str) -> tuple[str, dict[str, Any]]:
    """The registry's answer: the digest it serves (checked against the body) and the manifest."""
    response = httpx.get(
        f"{REGISTRY}/v2/{repository}/manifests/{reference}",
        headers={"Accept": ", ".join(MANIFEST_TYPES)},
        timeout=30,
    )
    response.raise_for_status()
    body, served = response.content, response.headers["Docker-Content-Digest"]
    assert served == "sha256:" + hashlib.sha256(body).hexdigest()
    return served, json.loads(body)


def registry_size(repository: str, manifest: dict[str, Any]) -> tuple[int, int]:
    """(config + compressed layers, number of layers); an index sums its platform images."""
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        size = layers = 0
        for entry in manifest["manifests"]:
            platform = entry.get("platform", {})
            kind = entry.get("annotations", {}).get("vnd.docker.reference.type")
            if kind == "attestation-manifest" or (platform.get("os"), platform.get("architecture")) == (
                "unknown",
                "unknown",
            ):
                continue
            _, image = get_manifest(repository, entry["digest"])
            image_size, image_layers = registry_size(repository, image)
            size, layers = size + image_size, layers + image_layers
        return size, layers
    layer_sizes = [layer["size"] for layer in manifest["layers"]]
    return manifest["config"]["size"] + sum(layer_sizes), len(layer_sizes)


def ready_condition(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == "Ready")


def assert_status_matches_registry(sb: dict[str, Any]) -> None:
    generation = sb["metadata"]["generation"]
    status = sb["status"]
    ready = ready_condition(status)
    assert (ready["status"], ready.get("observedGeneration")) == ("True", generation)
    assert status["observedGeneration"] == generation
    output = status["output"]
    assert output["generation"] == generation

    repository, tag = repository_and_tag(output["image"])
    served, manifest = get_manifest(repository, tag)
    assert output["digest"] == served
    assert output["image"].endswith(f":{tag}@{served}")
    assert output["image"].split("@", 1)[0] == sb["spec"]["output"]["image"]

    size, layers = registry_size(repository, manifest)
    assert output["sizeBytes"] == size
    if "manifests" not in manifest:
        assert output["layers"] == layers


@pytest.mark.parametrize("name", SAMPLES)
def test_status_matches_the_registry(name):
    assert_status_matches_registry(wait_ready(name, 1200))


def test_runtime_image_runs():
    sb = wait_ready("hello", 1200)
    image = pull_name(sb["status"]["output"]["image"], PULL_REGISTRY)
    pod = f"hello-e2e-{int(time.time())}"
    kubectl("run", pod, f"--image={image}", "--restart=Never", "--", "e2e")
    try:
        succeeded = "--for=jsonpath={.status.phase}=Succeeded"
        kubectl("wait", succeeded, f"pod/{pod}", "--timeout=180s", timeout=210)
        logs = kubectl("logs", pod)
    finally:
        kubectl("delete", "pod", pod, "--wait=false")
    version = sb["spec"]["buildArgs"]["APP_VERSION"]
    assert logs.strip() == f"hello, e2e (version {version})"


def test_warm_rebuild_reports_cached_steps():
    before = wait_ready("hello", 1200)
    version = f"1.0.{int(time.time())}"
    patch = {"spec": {"buildArgs": {"APP_VERSION": version}}}
    kubectl("patch", "servicebuild", "hello", "--type=merge", "-p", json.dumps(patch))
    generation = servicebuild("hello")["metadata"]["generation"]
    assert generation > before["metadata"]["generation"]

    after = wait_ready("hello", 900)

    assert after["metadata"]["generation"] == generation
    assert_status_matches_registry(after)
    cache = after["status"]["cache"]
    assert 0 < cache["cachedSteps"] <= cache["totalSteps"]
    assert after["status"]["jobName"] != before["status"]["jobName"]
    # Only the final stage's config changed (ENV APP_VERSION): a new image, the same tag.
    assert after["status"]["output"]["digest"] != before["status"]["output"]["digest"]
