"""The registry gateway's pure parts: push-secret parsing and manifest sizes.

We test these aspects:
- `.dockerconfigjson`: `auth` (base64 user:password) and `username`/`password` entries; keys
  written as host, host:port, https://host, http://host/v1/; the Docker Hub key
  `https://index.docker.io/v1/` serves `docker.io`; a port is part of the host; an exact key
  wins over one that only normalises to the registry; no entry → None;
- malformed documents and entries → InvalidPushSecret whose message holds no secret;
- Credentials never show the password in repr, str or f-strings;
- a manifest's size is config + layers (the design's example: 597 + 319,617); malformed sizes
  are InvalidManifest;
- an index: platforms with variants, attestation manifests and unknown/unknown entries skipped,
  totals over the platforms; an index of attestations only and unknown media types are invalid;
- which errors are transient.
"""

import base64
import json
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
    Credentials,
    DigestMismatch,
    InvalidPushSecret,
    ManifestNotFound,
    RegistryAuthDenied,
    RegistryUnavailable,
    credentials_from_docker_config,
)

SECRET = "hunter2-very-secret"  # noqa: S105 (a made-up password that must never show)


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def config(auths: dict[str, Any]) -> str:
    return json.dumps({"auths": auths})


@pytest.mark.parametrize(
    ("auths", "registry", "expected"),
    [
        ({"reg.example.com": {"auth": basic("ci", SECRET)}}, "reg.example.com", ("ci", SECRET)),
        ({"reg.example.com": {"username": "ci", "password": SECRET}}, "reg.example.com", ("ci", SECRET)),
        ({"reg.example.com": {"auth": basic("ci", "pa:ss")}}, "reg.example.com", ("ci", "pa:ss")),
        ({"https://reg.example.com": {"auth": basic("ci", SECRET)}}, "reg.example.com", ("ci", SECRET)),
        (
            {"http://reg.example.com:5000/v1/": {"auth": basic("ci", SECRET)}},
            "reg.example.com:5000",
            ("ci", SECRET),
        ),
        ({"Reg.Example.com": {"auth": basic("ci", SECRET)}}, "reg.example.com", ("ci", SECRET)),
        ({"https://index.docker.io/v1/": {"auth": basic("hub", SECRET)}}, "docker.io", ("hub", SECRET)),
        ({"docker.io": {"auth": basic("hub", SECRET)}}, "registry-1.docker.io", ("hub", SECRET)),
        (
            {
                "https://reg.example.com": {"auth": basic("other", "x")},
                "reg.example.com": {"auth": basic("ci", "y")},
            },
            "reg.example.com",
            ("ci", "y"),
        ),
        # An empty `auth` falls back to username/password, as docker does.
        (
            {"reg.example.com": {"auth": "", "username": "ci", "password": SECRET}},
            "reg.example.com",
            ("ci", SECRET),
        ),
        ({"reg.example.com:5000": {"auth": basic("ci", SECRET)}}, "reg.example.com", None),
        ({"reg.example.com": {"auth": basic("ci", SECRET)}}, "reg.example.com:5000", None),
        ({"other.example.com": {"auth": basic("ci", SECRET)}}, "reg.example.com", None),
        ({"https://index.docker.io/v1/": {"auth": basic("hub", SECRET)}}, "ghcr.io", None),
        ({}, "reg.example.com", None),
    ],
)
def test_credentials_from_docker_config(
    auths: dict[str, Any], registry: str, expected: tuple[str, str] | None
) -> None:
    found = credentials_from_docker_config(config(auths), registry)
    assert found == (Credentials(*expected) if expected else None)


def test_credentials_from_bytes() -> None:
    document = config({"reg.example.com": {"auth": basic("ci", SECRET)}}).encode()
    assert credentials_from_docker_config(document, "reg.example.com") == Credentials("ci", SECRET)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (f'{{"auths": {{"reg.example.com": {{"password": "{SECRET}"', "not valid JSON"),
        (b"\xff\xfe" + SECRET.encode(), "not valid JSON"),
        (json.dumps({"reg.example.com": {"auth": basic("ci", SECRET)}}), "no 'auths'"),
        (json.dumps([SECRET]), "no 'auths'"),
        (config({"reg.example.com": SECRET}), "not an object"),
        (config({"reg.example.com": {"auth": f"{SECRET}!!"}}), "not base64"),
        (config({"reg.example.com": {"auth": base64.b64encode(SECRET.encode()).decode()}}), "not base64"),
        (config({"reg.example.com": {"password": SECRET}}), "neither"),
        (config({"reg.example.com": {"identitytoken": SECRET}}), "neither"),
    ],
)
def test_malformed_push_secret(document: str | bytes, problem: str) -> None:
    with pytest.raises(InvalidPushSecret) as invalid:
        credentials_from_docker_config(document, "reg.example.com")

    assert problem in str(invalid.value)
    assert SECRET not in str(invalid.value)
    assert SECRET not in repr(invalid.value)
    # No chained exception carries the document into a traceback either.
    assert invalid.value.__cause__ is None
    assert invalid.value.__suppress_context__ or invalid.value.__context__ is None
    assert not invalid.value.transient


def test_credentials_never_show_the_password() -> None:
    credentials = Credentials("ci", SECRET)
    for shown in (repr(credentials), str(credentials), f"{credentials}", repr([credentials])):
        assert SECRET not in shown
        assert "ci" in shown


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
        InvalidPushSecret,
        DigestMismatch,
        registry.InvalidManifest,
    ):
        assert not permanent("x").transient
