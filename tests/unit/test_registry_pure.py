"""The registry gateway's pure parts: manifest sizes. Push secrets are tested in test_credentials.py.

We test these aspects:
- a manifest's size is config + layers (the design's example: 597 + 319,617); malformed sizes
  are InvalidManifest;
- an index: platforms with variants, attestation manifests and unknown/unknown entries skipped,
  totals over the platforms; an index of attestations only and unknown media types are invalid;
- which errors are transient.
"""

from typing import Any

import pytest

from servicebuild import registry
from servicebuild.manifests import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageSummary,
    InvalidManifest,
    PlatformImage,
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


def test_only_unavailability_is_transient() -> None:
    assert RegistryUnavailable("x").transient
    for permanent in (
        RegistryAuthDenied,
        ManifestNotFound,
        DigestMismatch,
        registry.InvalidManifest,
    ):
        assert not permanent("x").transient
