"""Where the bytes are, read back from the real registry after a build.

We test these aspects:
- one platform: `status.output` has the base image's bytes, the bytes the target stage added and the
  largest layers, each as the registry serves it, the `COPY` named with the `--from=` BuildKit drops;
- a multi-platform index with provenance: each platform's image has its own figures, the attestation
  manifests none, and the output as a whole none;
- a rebuild after a one-line change of a source file: `status.cache.firstMiss` names the `COPY` that
  missed and that file, not the unchanged Dockerfile.
"""

from typing import Any

from cluster import CONFIGMAPS, Cluster, eventually
from helpers import CONTEXT, NAMESPACE, build_context_fixture, ready, served, spec, status_of
from kubelet import Kubelet
from operator_process import OperatorProcess

from support.oci_registry import OCI_INDEX, RunningRegistry

DOCKERFILE = """\
FROM alpine:3.20 AS build
COPY main.c .
RUN cc -o /greet main.c
FROM busybox:1.36 AS runtime
COPY --from=build /greet /usr/local/bin/greet
USER 1000
ENTRYPOINT ["/usr/local/bin/greet"]
"""
COPY_ARTIFACT = "COPY --from=build /greet /usr/local/bin/greet"

build_context = build_context_fixture({"Dockerfile": DOCKERFILE, "main.c": "int main(){}"})


def expected_bytes(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the status must say of an image whose last layer is the target stage's `COPY`."""
    sizes = [layer["size"] for layer in manifest["layers"]]
    names = ["base layer (made without a Dockerfile)"] * (len(sizes) - 1) + [COPY_ARTIFACT]
    largest = sorted(zip(sizes, names, strict=True), key=lambda layer: -layer[0])
    return {
        "baseBytes": sum(sizes[:-1]),
        "addedBytes": sizes[-1],
        "largestLayers": [{"sizeBytes": size, "instruction": name} for size, name in largest],
    }


async def test_one_platform_image_has_base_and_added_bytes_and_its_largest_layers(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    await cluster.create_servicebuild(NAMESPACE, "greet", spec(oci_registry, "greet"))

    body = await eventually(lambda: ready(cluster, "greet", 1))

    manifest = served(oci_registry, "shop/greet", "1").json()
    output = body["status"]["output"]
    assert {key: output.get(key) for key in ("baseBytes", "addedBytes", "largestLayers")} == expected_bytes(
        manifest
    )


async def test_each_platform_of_an_index_has_its_own_figures(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    platforms = ["linux/amd64", "linux/arm64"]
    # With provenance BuildKit adds an attestation manifest per platform to the index.
    edge = spec(oci_registry, "edge", platforms=platforms, attestations={"provenance": "min"})
    await cluster.create_servicebuild(NAMESPACE, "edge", edge)

    body = await eventually(lambda: ready(cluster, "edge", 1))

    index = served(oci_registry, "shop/edge", "1", accept=OCI_INDEX).json()
    output = body["status"]["output"]
    assert [platform["platform"] for platform in output["platforms"]] == platforms
    for platform in output["platforms"]:
        manifest = served(oci_registry, "shop/edge", platform["digest"]).json()
        assert {key: platform.get(key) for key in ("baseBytes", "addedBytes", "largestLayers")} == (
            expected_bytes(manifest)
        )
    attestations = [entry for entry in index["manifests"] if entry["platform"]["os"] == "unknown"]
    assert len(attestations) == 2  # one per platform, none with figures
    assert output["sizeBytes"] == sum(platform["sizeBytes"] for platform in output["platforms"])
    assert output["layers"] == sum(platform["layers"] for platform in output["platforms"])
    assert not {"baseBytes", "addedBytes", "largestLayers"} & set(output)


async def test_a_rebuild_after_a_one_line_change_names_the_copy_that_missed_and_the_file(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    copy_sources = "[build 2/3] COPY main.c ."
    kubelet.first_misses["greet"] = copy_sources
    await cluster.create_servicebuild(NAMESPACE, "greet", spec(oci_registry, "greet"))
    await eventually(lambda: ready(cluster, "greet", 1))
    assert status_of(cluster, "greet")["cache"]["firstMiss"] == {"step": copy_sources}  # no build before

    await cluster.patch(CONFIGMAPS, NAMESPACE, CONTEXT, {"data": {"main.c": "int main(){return 1;}"}})

    await eventually(lambda: status_of(cluster, "greet").get("build") == 2 and ready(cluster, "greet", 1))
    first_miss = status_of(cluster, "greet")["cache"]["firstMiss"]
    assert first_miss == {"step": copy_sources, "changedFiles": ["main.c"]}
