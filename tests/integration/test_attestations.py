"""We test these aspects, with the real operator process, KMock's API emulator, a real registry and the
kubelet stand-in pushing what BuildKit pushes for the Job's `attest:` options:

- with the operator's shipped default (provenance `min`) a build pushes an OCI index: the status
  reports provenance `min` and the attestation manifest the registry serves in that index, with the
  platform image it describes; the same build with provenance `off` pushes a plain manifest, reports
  provenance `none` and no attestations, and the same size and layers;
- an SBOM, with a scanner the registry has, is read back beside the provenance;
- `max` with a build argument named like a secret ends Stalled InvalidSpec naming it, with no Job;
- a build with an SBOM whose scanner the registry lacks fails as BuildKit fails (the words of a
  missing base image) and ends Stalled SBOMScannerNotFound naming the setting, not retried.
"""

import functools
from typing import Any

import helpers
import pytest
from cluster import JOBS, Cluster, condition, eventually
from helpers import NAMESPACE, build_context_fixture, ready, served, stalled
from kubelet import Kubelet
from operator_process import OperatorProcess

from support.oci_registry import OCI_INDEX, OCI_MANIFEST, SLSA_PROVENANCE, RunningRegistry, push_image, tar_gz

CONTEXT = "attested-context"
build_context = build_context_fixture({"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "1"}, name=CONTEXT)
spec = functools.partial(helpers.spec, context=CONTEXT)


@pytest.fixture
def scanner(oci_registry: RunningRegistry, unique_repository: str) -> str:
    """This test's SBOM scanner reference, on the test registry (which has it only if the test pushes it)."""
    return f"{oci_registry.host}/{unique_repository}/buildkit-syft-scanner:stable-1"


@pytest.fixture
def operator_env(operator_env: dict[str, str], scanner: str) -> dict[str, str]:
    """The shipped default provenance (the shared environment turns it off), and this test's scanner."""
    environment = {
        key: value for key, value in operator_env.items() if key != "SERVICEBUILD_DEFAULT_PROVENANCE"
    }
    return {**environment, "SERVICEBUILD_SBOM_SCANNER_IMAGE": scanner}


def attestation_entries(index: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        entry
        for entry in index["manifests"]
        if (entry.get("annotations") or {}).get("vnd.docker.reference.type") == "attestation-manifest"
    ]


async def test_default_provenance_is_read_back_and_sizes_as_without(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    await cluster.create_servicebuild(NAMESPACE, "checkout", spec(oci_registry, "checkout"))
    attested = (await eventually(lambda: ready(cluster, "checkout", 1)))["status"]["output"]

    response = served(oci_registry, "shop/checkout", "1", accept=OCI_INDEX)
    index = response.json()
    assert attested["digest"] == response.headers["Docker-Content-Digest"]
    assert index["mediaType"] == OCI_INDEX
    (entry,) = attestation_entries(index)
    (image,) = [item for item in index["manifests"] if item["platform"]["os"] != "unknown"]
    assert entry["platform"] == {"os": "unknown", "architecture": "unknown"}
    assert entry["annotations"]["vnd.docker.reference.digest"] == image["digest"]
    statements = served(oci_registry, "shop/checkout", entry["digest"]).json()
    assert [layer["annotations"]["in-toto.io/predicate-type"] for layer in statements["layers"]] == [
        SLSA_PROVENANCE
    ]
    assert attested["provenance"] == "min"
    assert attested["attestations"] == [
        {
            "type": "provenance",
            "digest": entry["digest"],
            "subject": image["digest"],
            "platform": "linux/amd64",
        }
    ]

    await cluster.change_spec(NAMESPACE, "checkout", {"attestations": {"provenance": "off"}})
    plain = (await eventually(lambda: ready(cluster, "checkout", 2)))["status"]["output"]

    manifest = served(oci_registry, "shop/checkout", "1")
    assert manifest.json()["mediaType"] == OCI_MANIFEST
    assert plain["digest"] == manifest.headers["Docker-Content-Digest"]
    assert plain["provenance"] == "none"
    assert "attestations" not in plain
    assert (plain["sizeBytes"], plain["layers"]) == (attested["sizeBytes"], attested["layers"])


async def test_an_sbom_is_read_back_beside_the_provenance(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry, scanner: str
) -> None:
    repository = scanner.split("/", 1)[1].rsplit(":", 1)[0]
    push_image(oci_registry, repository, "stable-1", [tar_gz({"bin/syft-scanner": b"scanner"})])
    attestations = {"provenance": "max", "sbom": True}
    await cluster.create_servicebuild(
        NAMESPACE,
        "catalog",
        spec(oci_registry, "catalog", attestations=attestations, buildArgs={"VERSION": "2"}),
    )

    output = (await eventually(lambda: ready(cluster, "catalog", 1)))["status"]["output"]

    (entry,) = attestation_entries(served(oci_registry, "shop/catalog", "1", accept=OCI_INDEX).json())
    assert output["provenance"] == "max"
    assert [(item["type"], item["digest"]) for item in output["attestations"]] == [
        ("sbom", entry["digest"]),
        ("provenance", entry["digest"]),
    ]
    (job,) = cluster.all(JOBS, NAMESPACE)
    assert job["metadata"]["annotations"]["servicebuild.dev/sbom-scanner"] == scanner


async def test_max_with_a_secret_looking_build_arg_is_refused_before_any_job(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry
) -> None:
    await cluster.create_servicebuild(
        NAMESPACE,
        "payments",
        spec(
            oci_registry,
            "payments",
            attestations={"provenance": "max"},
            buildArgs={"VERSION": "3", "NPM_TOKEN": "npm_9f8e7d6c"},
        ),
    )

    body = await eventually(lambda: stalled(cluster, "payments"))

    found = condition(body, "Stalled")
    assert found is not None
    assert found["reason"] == "InvalidSpec"
    assert "spec.buildArgs: NPM_TOKEN" in found["message"]
    assert "npm_9f8e7d6c" not in str(body["status"])
    assert cluster.all(JOBS, NAMESPACE) == []


async def test_a_missing_sbom_scanner_ends_stalled_with_its_own_reason(
    cluster: Cluster, kubelet: Kubelet, operator: OperatorProcess, oci_registry: RunningRegistry, scanner: str
) -> None:
    await cluster.create_servicebuild(
        NAMESPACE, "search", spec(oci_registry, "search", attestations={"sbom": True})
    )

    body = await eventually(lambda: stalled(cluster, "search"))

    found = condition(body, "Stalled")
    assert found is not None
    assert found["reason"] == "SBOMScannerNotFound"
    assert scanner in found["message"]
    assert "SERVICEBUILD_SBOM_SCANNER_IMAGE" in found["message"]
    assert f"failed to resolve source metadata for {scanner}" in body["status"]["logTail"]
    assert body["status"].get("attempt") is None
    assert len(cluster.all(JOBS, NAMESPACE)) == 1
