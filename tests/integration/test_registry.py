"""The registry gateway against a real registry (Debian's docker-registry, distribution 2.8).

We test these aspects:
- a single manifest (OCI and Docker v2): the digest is the one pushed, the size is config + layers;
- an OCI index: one entry per platform with its own size and layers, totals over the platforms,
  the BuildKit attestation manifests left out of the sizes but read back: per platform image, what
  its in-toto statements attest (provenance, SBOM), its digest as the registry serves it; a
  single-platform index with provenance sizes exactly as the plain image of the same layers;
- htpasswd (Basic) auth: the right credentials read the manifest, wrong or none are denied;
- token (Bearer) auth: a token is fetched from the realm with the credentials and reused while
  valid; wrong credentials or an anonymous token without access are denied;
- an image's manifest and config (with its history) are read back, with auth; an index has no config;
- an unknown digest is a permanent ManifestNotFound;
- a stopped registry, a 5xx and a 429 are transient RegistryUnavailable; a host not listed as
  insecure is reached over https (so a plain-http registry is unavailable to it);
- content that does not hash to the digest asked for is a DigestMismatch;
- no error message carries the password;
- a digest pushed untagged (an image, an index) is tagged with push rights, with Basic and Bearer auth;
  wrong credentials are denied; a fence that says no stops the write and the tag keeps its digest.
"""

import hashlib
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from servicebuild.credentials import Credentials
from servicebuild.imageref import ImageRef, parse_image
from servicebuild.kube import NotLeadingError
from servicebuild.manifests import Attestation, ImageSummary, PlatformImage
from servicebuild.registry import (
    DigestMismatch,
    InvalidManifest,
    ManifestNotFound,
    RegistryAuthDenied,
    RegistryClient,
    RegistryUnavailable,
)
from support.fixtures import REGISTRY_USER
from support.oci_registry import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    SLSA_PROVENANCE,
    SPDX_SBOM,
    RunningRegistry,
    push_image,
    push_index,
    start_registry,
    tar_gz,
)

RIGHT = Credentials(*REGISTRY_USER)
WRONG = Credentials(REGISTRY_USER[0], "not-the-password")


def client_for(*hosts: str) -> RegistryClient:
    return RegistryClient(insecure_registries=frozenset(hosts), timeout=5.0)


def image_of(registry: RunningRegistry | str, repository: str, tag: str = "1.0") -> ImageRef:
    host = registry.host if isinstance(registry, RunningRegistry) else registry
    return parse_image(f"{host}/{repository}:{tag}")


def layers() -> list[bytes]:
    # Random content does not compress, so every layer has a size of its own.
    return [
        tar_gz({"app/bin": secrets.token_bytes(30_000)}),
        tar_gz({"etc/config": secrets.token_bytes(500)}),
    ]


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_single_manifest_is_sized_as_config_plus_layers(
    oci_registry: RunningRegistry, unique_repository: str, media_type: str
) -> None:
    blobs = layers()
    pushed = push_image(oci_registry, unique_repository, "1.0", blobs, media_type=media_type)

    with client_for(oci_registry.host) as client:
        summary = client.inspect(image_of(oci_registry, unique_repository), pushed.digest, None)

    assert pushed.digest == f"sha256:{hashlib.sha256(pushed.manifest_bytes).hexdigest()}"
    assert summary == ImageSummary(
        digest=pushed.digest,
        media_type=media_type,
        size_bytes=pushed.config_size + len(blobs[0]) + len(blobs[1]),
        layers=2,
        platforms=(),
    )


def test_manifest_and_config_are_read_with_htpasswd_auth_and_the_config_history(
    oci_registry_htpasswd: RunningRegistry, unique_repository: str
) -> None:
    history = [{"created_by": "base layer"}, {"created_by": "COPY /app /app # buildkit"}]
    pushed = push_image(oci_registry_htpasswd, unique_repository, "1.0", layers(), history=history)

    with client_for(oci_registry_htpasswd.host) as client:
        manifest, config = client.manifest_and_config(
            image_of(oci_registry_htpasswd, unique_repository), pushed.digest, RIGHT
        )

    assert manifest == pushed.manifest
    assert config["history"] == history


def test_an_index_has_no_config_of_its_own(oci_registry: RunningRegistry, unique_repository: str) -> None:
    pushed = push_index(oci_registry, unique_repository, "multi")

    with client_for(oci_registry.host) as client, pytest.raises(InvalidManifest):
        client.manifest_and_config(image_of(oci_registry, unique_repository, "multi"), pushed.digest, None)


def test_index_is_sized_per_platform_without_the_attestation(
    oci_registry: RunningRegistry, unique_repository: str
) -> None:
    pushed = push_index(oci_registry, unique_repository, "multi")
    assert pushed.attestation is not None
    assert pushed.attestation.size_bytes > 50_000  # counting it would change the total visibly

    with client_for(oci_registry.host) as client:
        summary = client.inspect(image_of(oci_registry, unique_repository, "multi"), pushed.digest, None)

    amd64, arm64 = pushed.platforms["linux/amd64"], pushed.platforms["linux/arm64"]
    assert amd64.size_bytes != arm64.size_bytes
    assert summary == ImageSummary(
        digest=pushed.digest,
        media_type=OCI_INDEX,
        size_bytes=amd64.size_bytes + arm64.size_bytes,
        layers=4,
        platforms=(
            PlatformImage("linux/amd64", amd64.digest, amd64.size_bytes, 2),
            PlatformImage("linux/arm64", arm64.digest, arm64.size_bytes, 2),
        ),
        attestations=(
            Attestation("provenance", pushed.attestations["linux/amd64"].digest, amd64.digest, "linux/amd64"),
            Attestation("provenance", pushed.attestations["linux/arm64"].digest, arm64.digest, "linux/arm64"),
        ),
    )


def test_a_single_platform_build_with_provenance_and_sbom_sizes_as_without(
    oci_registry: RunningRegistry, unique_repository: str
) -> None:
    blobs = layers()
    plain = push_image(oci_registry, unique_repository, "plain", blobs)
    attested = push_index(
        oci_registry,
        unique_repository,
        "attested",
        images={"linux/amd64": blobs},
        predicates=(SPDX_SBOM, SLSA_PROVENANCE),
    )

    with client_for(oci_registry.host) as client:
        without = client.inspect(image_of(oci_registry, unique_repository, "plain"), plain.digest, None)
        summary = client.inspect(image_of(oci_registry, unique_repository, "attested"), attested.digest, None)

    statement = attested.attestations["linux/amd64"]
    assert statement.layer_sizes[0] > 50_000  # counting it would change the total visibly
    assert (
        (summary.size_bytes, summary.layers) == (without.size_bytes, without.layers) == (plain.size_bytes, 2)
    )
    assert summary.platforms == (PlatformImage("linux/amd64", plain.digest, plain.size_bytes, 2),)
    assert summary.attestations == (
        Attestation("sbom", statement.digest, plain.digest, "linux/amd64"),
        Attestation("provenance", statement.digest, plain.digest, "linux/amd64"),
    )


def test_basic_auth_with_the_right_credentials(
    oci_registry_htpasswd: RunningRegistry, unique_repository: str
) -> None:
    pushed = push_image(oci_registry_htpasswd, unique_repository, "1.0", layers())

    with client_for(oci_registry_htpasswd.host) as client:
        summary = client.inspect(image_of(oci_registry_htpasswd, unique_repository), pushed.digest, RIGHT)

    assert (summary.digest, summary.size_bytes) == (pushed.digest, pushed.size_bytes)


@pytest.mark.parametrize("registry_fixture", ["oci_registry_htpasswd", "oci_registry_token"])
@pytest.mark.parametrize("credentials", [WRONG, None], ids=["wrong", "none"])
def test_auth_denied(
    request: pytest.FixtureRequest,
    registry_fixture: str,
    unique_repository: str,
    credentials: Credentials | None,
) -> None:
    registry: RunningRegistry = request.getfixturevalue(registry_fixture)
    pushed = push_image(registry, unique_repository, "1.0", layers())

    with client_for(registry.host) as client, pytest.raises(RegistryAuthDenied) as denied:
        client.inspect(image_of(registry, unique_repository), pushed.digest, credentials)

    assert not denied.value.transient
    assert registry.host in str(denied.value)
    assert unique_repository in str(denied.value)
    assert WRONG.password not in str(denied.value)


def test_bearer_token_is_fetched_with_the_credentials_and_reused(
    oci_registry_token: RunningRegistry, unique_repository: str
) -> None:
    token_server = oci_registry_token.token_server
    assert token_server is not None
    pushed = push_image(oci_registry_token, unique_repository, "1.0", layers())
    scope = f"repository:{unique_repository}:pull"

    with client_for(oci_registry_token.host) as client:
        image = image_of(oci_registry_token, unique_repository)
        first = client.inspect(image, pushed.digest, RIGHT)
        second = client.inspect(image, pushed.digest, RIGHT)

    assert first == second
    assert (first.digest, first.size_bytes) == (pushed.digest, pushed.size_bytes)
    asked = [request for request in token_server.requests if scope in request[1]]
    assert asked == [(RIGHT.username, [scope])]


def test_a_token_for_one_secret_does_not_serve_another(
    oci_registry_token: RunningRegistry, unique_repository: str
) -> None:
    pushed = push_image(oci_registry_token, unique_repository, "1.0", layers())
    image = image_of(oci_registry_token, unique_repository)

    with client_for(oci_registry_token.host) as client:
        client.inspect(image, pushed.digest, RIGHT)
        with pytest.raises(RegistryAuthDenied):
            client.inspect(image, pushed.digest, None)


def test_unknown_digest_is_not_found(oci_registry: RunningRegistry, unique_repository: str) -> None:
    push_image(oci_registry, unique_repository, "1.0", layers())
    unknown = f"sha256:{hashlib.sha256(b'never pushed').hexdigest()}"

    with client_for(oci_registry.host) as client, pytest.raises(ManifestNotFound) as missing:
        client.inspect(image_of(oci_registry, unique_repository), unknown, None)

    assert not missing.value.transient
    assert unique_repository in str(missing.value)


def test_stopped_registry_is_transiently_unavailable(tmp_path: Path) -> None:
    registry = start_registry(tmp_path)
    try:
        pushed = push_image(registry, "shop/checkout", "1.0", layers())
        image = image_of(registry, "shop/checkout")
        with client_for(registry.host) as client:
            assert client.inspect(image, pushed.digest, None).digest == pushed.digest
    finally:
        registry.stop()

    with client_for(registry.host) as client, pytest.raises(RegistryUnavailable) as unavailable:
        client.inspect(image, pushed.digest, None)

    assert unavailable.value.transient
    assert registry.host in str(unavailable.value)


def test_registry_not_listed_as_insecure_is_reached_over_https(
    oci_registry: RunningRegistry, unique_repository: str
) -> None:
    pushed = push_image(oci_registry, unique_repository, "1.0", layers())

    with client_for() as client, pytest.raises(RegistryUnavailable):
        client.inspect(image_of(oci_registry, unique_repository), pushed.digest, None)


class _Answer(BaseHTTPRequestHandler):
    """Answers every GET with the server's fixed status and body."""

    def do_GET(self) -> None:
        status, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", OCI_MANIFEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def fixed_server() -> Iterator[ThreadingHTTPServer]:
    """An HTTP server that answers whatever `server.answer = (status, body)` says."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_and_throttling_are_transient(fixed_server: ThreadingHTTPServer, status: int) -> None:
    fixed_server.answer = (status, b"{}")  # type: ignore[attr-defined]
    host = f"127.0.0.1:{fixed_server.server_address[1]}"

    with client_for(host) as client, pytest.raises(RegistryUnavailable) as unavailable:
        client.inspect(image_of(host, "shop/checkout"), f"sha256:{'0' * 64}", None)

    assert unavailable.value.transient
    assert str(status) in str(unavailable.value)


def test_content_that_does_not_match_the_digest_is_rejected(fixed_server: ThreadingHTTPServer) -> None:
    served = b'{"schemaVersion":2,"config":{"size":1},"layers":[]}'
    fixed_server.answer = (200, served)  # type: ignore[attr-defined]
    host = f"127.0.0.1:{fixed_server.server_address[1]}"
    asked = f"sha256:{hashlib.sha256(served + b' ').hexdigest()}"

    with client_for(host) as client, pytest.raises(DigestMismatch) as mismatch:
        client.inspect(image_of(host, "shop/checkout"), asked, None)

    assert not mismatch.value.transient


def fenced_off(action: str) -> None:
    """`Kube.fence` of a replica that does not lead."""
    raise NotLeadingError(action)


@pytest.mark.parametrize("registry_fixture", ["oci_registry_htpasswd", "oci_registry_token"])
def test_a_digest_pushed_untagged_is_tagged_with_push_rights(
    request: pytest.FixtureRequest, registry_fixture: str, unique_repository: str
) -> None:
    registry: RunningRegistry = request.getfixturevalue(registry_fixture)
    image = push_image(registry, unique_repository, None, layers())
    index = push_index(registry, unique_repository, None)
    release, multi = (
        image_of(registry, unique_repository, "release"),
        image_of(registry, unique_repository, "multi"),
    )

    with client_for(registry.host) as client:
        with pytest.raises(ManifestNotFound):
            client.tag_digest(release, RIGHT)
        client.tag(release, image.digest, RIGHT)
        client.tag(multi, index.digest, RIGHT)
        with pytest.raises(RegistryAuthDenied):
            client.tag(release, index.digest, WRONG)

        assert client.tag_digest(release, RIGHT) == image.digest
        assert client.tag_digest(multi, RIGHT) == index.digest
        assert client.inspect(multi, index.digest, RIGHT).platforms != ()


def test_a_fenced_off_tag_is_never_written(oci_registry: RunningRegistry, unique_repository: str) -> None:
    first = push_image(oci_registry, unique_repository, "release", layers())
    second = push_image(oci_registry, unique_repository, None, layers())
    release = image_of(oci_registry, unique_repository, "release")

    client = RegistryClient(insecure_registries=frozenset({oci_registry.host}), timeout=5.0, fence=fenced_off)
    with client, pytest.raises(NotLeadingError):
        client.tag(release, second.digest, None)

    with client_for(oci_registry.host) as reader:
        assert reader.tag_digest(release, None) == first.digest
