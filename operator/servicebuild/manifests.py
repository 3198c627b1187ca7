"""What a registry serves for an image: manifests, indexes and their sizes, computed from the documents;
pure (the registry gateway fetches the documents, this module reads them).

Size = the config's size plus the compressed sizes of all layers, as the registry serves them (never
BuildKit's descriptor size, which is the manifest document's own). An index is summed over its platform
images; attestation manifests (platform `unknown/unknown`, or annotated `attestation-manifest`) are not
images and are left out of the sizes; what they attest is read from them (`Attestation`).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class InvalidManifest(ValueError):  # noqa: N818 - named as the registry gateway's error it becomes
    """The registry served something that is not a usable image manifest or index."""


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION_MANIFEST = "attestation-manifest"
PREDICATE_TYPE = "in-toto.io/predicate-type"
"""BuildKit's annotation of each in-toto statement layer of an attestation manifest (docs/attestations/
attestation-storage.md): what the statement's predicate is."""
PREDICATE_KINDS = (
    ("https://slsa.dev/provenance/", "provenance"),
    ("https://spdx.dev/Document", "sbom"),
    ("https://cyclonedx.org/bom", "sbom"),
)
"""Predicate type prefixes and what they attest: SLSA provenance (v0.2 or v1), an SPDX or CycloneDX SBOM."""


@dataclass(frozen=True)
class PlatformImage:
    platform: str
    digest: str
    size_bytes: int
    layers: int


@dataclass(frozen=True)
class Attestation:
    """One kind of statement an attestation manifest holds about one platform image."""

    kind: str
    """`provenance` or `sbom`."""
    digest: str
    """The attestation manifest's digest."""
    subject: str
    """The digest of the platform image it describes."""
    platform: str | None
    """That image's platform, when the index lists it."""


@dataclass(frozen=True)
class ImageSummary:
    """What the registry serves for one digest; for an index, sizes and layers are platform totals."""

    digest: str
    media_type: str
    size_bytes: int
    layers: int
    platforms: tuple[PlatformImage, ...]
    attestations: tuple[Attestation, ...] = ()


def manifest_size(manifest: Mapping[str, Any]) -> int:
    """Config size plus the (compressed) sizes of all layers, as the registry serves them."""
    try:
        sizes = [manifest["config"]["size"], *(layer["size"] for layer in manifest["layers"])]
    except (KeyError, TypeError):
        raise InvalidManifest("the manifest has no config and layers with sizes") from None
    if not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in sizes):
        raise InvalidManifest("the manifest has a config or layer size that is not a byte count")
    return sum(sizes)


def platform_manifests(index: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`(platform, digest)` of each image in an index; attestation manifests are not images."""
    found = []
    for entry in index.get("manifests") or []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("digest"), str):
            raise InvalidManifest("the image index has an entry without a digest")
        annotations = entry.get("annotations") or {}
        platform = entry.get("platform") or {}
        name = f"{platform.get('os', 'unknown')}/{platform.get('architecture', 'unknown')}"
        if platform.get("variant"):
            name = f"{name}/{platform['variant']}"
        if (
            name == "unknown/unknown"
            or annotations.get("vnd.docker.reference.type") == "attestation-manifest"
        ):
            continue
        found.append((name, entry["digest"]))
    return found


def attestation_manifests(index: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`(digest, subject)` of each attestation manifest in an index: BuildKit's annotations name the
    platform image each describes."""
    found = []
    for entry in index.get("manifests") or []:
        annotations = entry.get("annotations") if isinstance(entry, Mapping) else None
        if not isinstance(annotations, Mapping) or annotations.get(REFERENCE_TYPE) != ATTESTATION_MANIFEST:
            continue
        digest, subject = entry.get("digest"), annotations.get(REFERENCE_DIGEST)
        if isinstance(digest, str) and isinstance(subject, str):
            found.append((digest, subject))
    return found


def attested_kinds(manifest: Mapping[str, Any]) -> list[str]:
    """What an attestation manifest's statements attest, each kind once, by their predicate types;
    predicates of other kinds are left out."""
    kinds: list[str] = []
    for layer in manifest.get("layers") or []:
        annotations = layer.get("annotations") if isinstance(layer, Mapping) else None
        predicate = annotations.get(PREDICATE_TYPE) if isinstance(annotations, Mapping) else None
        kind = next(
            (
                kind
                for prefix, kind in PREDICATE_KINDS
                if isinstance(predicate, str) and predicate.startswith(prefix)
            ),
            None,
        )
        if kind is not None and kind not in kinds:
            kinds.append(kind)
    return kinds


def _attestations(
    index: Mapping[str, Any], platforms: tuple[PlatformImage, ...], children: Mapping[str, Mapping[str, Any]]
) -> tuple[Attestation, ...]:
    """The attestations of an index whose manifests were fetched (`children`), in index order."""
    platform_of = {platform.digest: platform.platform for platform in platforms}
    return tuple(
        Attestation(kind, digest, subject, platform_of.get(subject))
        for digest, subject in attestation_manifests(index)
        if digest in children
        for kind in attested_kinds(children[digest])
    )


def summarize(
    digest: str, media_type: str, document: Mapping[str, Any], children: Mapping[str, Mapping[str, Any]]
) -> ImageSummary:
    """Summarise a manifest, or an index given the manifests of its platforms (and of its attestations, to
    read what they attest) by digest."""
    if media_type in MANIFEST_TYPES:
        return ImageSummary(digest, media_type, manifest_size(document), len(document["layers"]), ())
    if media_type not in INDEX_TYPES:
        raise InvalidManifest(f"unsupported manifest media type {media_type!r}")
    platforms = tuple(
        PlatformImage(name, child, manifest_size(children[child]), len(children[child]["layers"]))
        for name, child in platform_manifests(document)
    )
    if not platforms:
        raise InvalidManifest("the image index lists no platform image")
    return ImageSummary(
        digest,
        media_type,
        sum(platform.size_bytes for platform in platforms),
        sum(platform.layers for platform in platforms),
        platforms,
        _attestations(document, platforms, children),
    )
