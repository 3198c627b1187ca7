"""The registry gateway's pure parts: manifest sizes. Push secrets are tested in test_credentials.py.

We test these aspects:
- a manifest's size is config + layers (the design's example: 597 + 319,617); malformed sizes
  are InvalidManifest;
- an index: platforms with variants, attestation manifests and unknown/unknown entries skipped,
  totals over the platforms; an index of attestations only and unknown media types are invalid;
- attestations: each attestation manifest named by BuildKit's annotations, with the image it
  describes; what it attests read from its statements' predicate types (SLSA provenance v0.2 and v1,
  SPDX and CycloneDX SBOMs; others left out), listed per kind with the image's platform;
- which errors are transient.
"""

from typing import Any

import pytest

from servicebuild import registry
from servicebuild.manifests import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Attestation,
    ImageSummary,
    InvalidManifest,
    PlatformImage,
    attestation_manifests,
    attested_kinds,
    manifest_size,
    platform_manifests,
    summarize,
)
from servicebuild.registry import (
    DigestMismatch,
    ManifestNotFound,
    RegistryAuthDenied,
    RegistryUnavailable,
)


def manifest(config_size: int, *layer_sizes: int, media_type: str = OCI_MANIFEST) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:c",
            "size": config_size,
        },
        "layers": [
            {"mediaType": "x", "digest": f"sha256:l{i}", "size": size} for i, size in enumerate(layer_sizes)
        ],
    }


def test_manifest_size_is_config_plus_layers() -> None:
    assert manifest_size(manifest(597, 319_617)) == 320_214
    assert manifest_size(manifest(100, 1, 2, 3)) == 106
    assert manifest_size(manifest(100)) == 100


@pytest.mark.parametrize(
    "broken",
    [
        {"layers": []},
        {"config": {"size": 1}},
        {"config": {"size": 1}, "layers": [{"digest": "sha256:x"}]},
        {"config": {"size": "12"}, "layers": []},
        {"config": {"size": 1}, "layers": [{"size": -5}]},
        {"config": {"size": True}, "layers": []},
        {"config": {"size": 1}, "layers": None},
    ],
)
def test_malformed_manifest_sizes(broken: dict[str, Any]) -> None:
    with pytest.raises(InvalidManifest):
        manifest_size(broken)


def entry(
    digest: str, platform: dict[str, str] | None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    found: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": digest, "size": 500}
    if platform is not None:
        found["platform"] = platform
    if annotations is not None:
        found["annotations"] = annotations
    return found


ATTESTATION = {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": "sha256:a"}
INDEX: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": OCI_INDEX,
    "manifests": [
        entry("sha256:a", {"os": "linux", "architecture": "amd64"}),
        entry("sha256:b", {"os": "linux", "architecture": "arm", "variant": "v7"}),
        entry("sha256:att1", {"os": "unknown", "architecture": "unknown"}, ATTESTATION),
        # Either mark alone makes an entry a non-image.
        entry("sha256:att2", {"os": "linux", "architecture": "amd64"}, ATTESTATION),
        entry("sha256:att3", {"os": "unknown", "architecture": "unknown"}),
        entry("sha256:att4", None),
    ],
}


def test_platform_manifests_skip_attestations() -> None:
    assert platform_manifests(INDEX) == [("linux/amd64", "sha256:a"), ("linux/arm/v7", "sha256:b")]


def test_index_summary_totals_the_platforms() -> None:
    children = {"sha256:a": manifest(600, 1000, 2000), "sha256:b": manifest(700, 5000)}
    summary = summarize("sha256:i", OCI_INDEX, INDEX, children)
    assert summary == ImageSummary(
        digest="sha256:i",
        media_type=OCI_INDEX,
        size_bytes=3600 + 5700,
        layers=3,
        platforms=(
            PlatformImage("linux/amd64", "sha256:a", 3600, 2),
            PlatformImage("linux/arm/v7", "sha256:b", 5700, 1),
        ),
    )


def test_single_manifest_summary_has_no_platforms() -> None:
    summary = summarize("sha256:m", DOCKER_MANIFEST, manifest(597, 319_617, media_type=DOCKER_MANIFEST), {})
    assert summary == ImageSummary("sha256:m", DOCKER_MANIFEST, 320_214, 1, ())


def test_index_of_attestations_only_is_invalid() -> None:
    only_attestations = {**INDEX, "manifests": INDEX["manifests"][2:]}
    with pytest.raises(InvalidManifest):
        summarize("sha256:i", OCI_INDEX, only_attestations, {})


def test_unknown_media_type_is_invalid() -> None:
    schema1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    with pytest.raises(InvalidManifest, match="unsupported manifest media type"):
        summarize("sha256:m", schema1, manifest(1, 2), {})


def test_index_entry_without_digest_is_invalid() -> None:
    with pytest.raises(InvalidManifest):
        platform_manifests({"manifests": [{"platform": {"os": "linux", "architecture": "amd64"}}]})


def statements(*predicate_types: str) -> dict[str, Any]:
    """An attestation manifest as BuildKit pushes it: one in-toto layer per statement, each annotated with
    its predicate type."""
    found = manifest(241, *(1000 for _ in predicate_types))
    for layer, predicate_type in zip(found["layers"], predicate_types, strict=True):
        layer |= {
            "mediaType": "application/vnd.in-toto+json",
            "annotations": {"in-toto.io/predicate-type": predicate_type},
        }
    return found


SLSA_V02 = "https://slsa.dev/provenance/v0.2"
SLSA_V1 = "https://slsa.dev/provenance/v1"
SPDX = "https://spdx.dev/Document"


def test_attestation_manifests_name_the_image_they_describe() -> None:
    # Both entries carry BuildKit's annotations, whatever their platform says; att3 and att4 carry none.
    assert attestation_manifests(INDEX) == [("sha256:att1", "sha256:a"), ("sha256:att2", "sha256:a")]


@pytest.mark.parametrize(
    ("predicate_types", "kinds"),
    [
        ((SLSA_V02,), ["provenance"]),
        ((SLSA_V1,), ["provenance"]),
        ((SPDX, SPDX, SLSA_V02), ["sbom", "provenance"]),
        (("https://cyclonedx.org/bom/v1.5",), ["sbom"]),
        (("https://in-toto.io/attestation/vulns/v0.1",), []),
        ((), []),
    ],
)
def test_attested_kinds_come_from_the_predicate_types(
    predicate_types: tuple[str, ...], kinds: list[str]
) -> None:
    assert attested_kinds(statements(*predicate_types)) == kinds


def test_layers_without_a_predicate_type_attest_nothing() -> None:
    assert attested_kinds(manifest(241, 1000)) == []


def test_index_summary_lists_the_attestations_and_leaves_them_out_of_the_sizes() -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            entry("sha256:a", {"os": "linux", "architecture": "amd64"}),
            entry("sha256:b", {"os": "linux", "architecture": "arm64"}),
            entry("sha256:att-a", {"os": "unknown", "architecture": "unknown"}, ATTESTATION),
            entry(
                "sha256:att-b",
                {"os": "unknown", "architecture": "unknown"},
                {**ATTESTATION, "vnd.docker.reference.digest": "sha256:b"},
            ),
        ],
    }
    children = {
        "sha256:a": manifest(600, 1000),
        "sha256:b": manifest(700, 2000),
        "sha256:att-a": statements(SPDX, SLSA_V02),
        "sha256:att-b": statements(SLSA_V02),
    }
    summary = summarize("sha256:i", OCI_INDEX, index, children)
    assert (summary.size_bytes, summary.layers) == (1600 + 2700, 2)
    assert summary.attestations == (
        Attestation("sbom", "sha256:att-a", "sha256:a", "linux/amd64"),
        Attestation("provenance", "sha256:att-a", "sha256:a", "linux/amd64"),
        Attestation("provenance", "sha256:att-b", "sha256:b", "linux/arm64"),
    )


def test_a_single_platform_index_with_provenance_sizes_as_its_image() -> None:
    image = manifest(600, 1000, 2000)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            entry("sha256:a", {"os": "linux", "architecture": "amd64"}),
            entry("sha256:att", {"os": "unknown", "architecture": "unknown"}, ATTESTATION),
        ],
    }
    summary = summarize("sha256:i", OCI_INDEX, index, {"sha256:a": image, "sha256:att": statements(SLSA_V02)})
    plain = summarize("sha256:a", OCI_MANIFEST, image, {})
    assert (summary.size_bytes, summary.layers) == (plain.size_bytes, plain.layers)
    assert summary.attestations == (Attestation("provenance", "sha256:att", "sha256:a", "linux/amd64"),)


def test_only_unavailability_is_transient() -> None:
    assert RegistryUnavailable("x").transient
    for permanent in (
        RegistryAuthDenied,
        ManifestNotFound,
        DigestMismatch,
        registry.InvalidManifest,
    ):
        assert not permanent("x").transient
