"""We test these aspects of the settings, read from SERVICEBUILD_* variables as the operator reads them:

- comma-separated lists become sets, blanks ignored;
- the BuildKit image and the SBOM scanner image must be an exact tag or a digest (no implicit tag, no
  `latest`);
- provenance defaults to `min`; the setting takes `min`, `max` or `off` and a spec's own choice wins;
- the per-namespace push registries parse from JSON, with `*` for the namespaces not named;
- the webhook receiver's address, as a table: `[host]:port`, IPv6 in brackets, empty is off; anything
  else (no port, a URL, a port out of range) is refused; an address needs a secret file.
"""

from pathlib import Path

import pytest
from pydantic import ValidationError

from servicebuild.api.models import Attestations, Provenance
from servicebuild.config import Settings, listen_address


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    names = (
        "INSECURE_REGISTRIES",
        "BUILDKIT_IMAGE",
        "ALLOWED_PUSH_REGISTRIES",
        "NAMESPACES",
        "SBOM_SCANNER_IMAGE",
    )
    names = (*names, "DEFAULT_PROVENANCE")
    for name in (*names, "WEBHOOK_ADDRESS", "WEBHOOK_SECRET_FILE", "METRICS_ADDRESS"):
        monkeypatch.delenv(f"SERVICEBUILD_{name}", raising=False)


def test_comma_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICEBUILD_INSECURE_REGISTRIES", "registry:5000, ,localhost:5001")
    monkeypatch.setenv("SERVICEBUILD_NAMESPACES", "shop")
    settings = Settings()
    assert settings.insecure_registries == {"registry:5000", "localhost:5001"}
    assert settings.namespaces == {"shop"}


@pytest.mark.parametrize("image", ["moby/buildkit", "moby/buildkit:latest", "registry:5000/buildkit"])
def test_buildkit_image_needs_an_exact_tag(monkeypatch: pytest.MonkeyPatch, image: str) -> None:
    monkeypatch.setenv("SERVICEBUILD_BUILDKIT_IMAGE", image)
    with pytest.raises(ValidationError, match="exact release tag"):
        Settings()


@pytest.mark.parametrize(
    "image",
    ["docker/buildkit-syft-scanner", "docker/buildkit-syft-scanner:latest", "mirror.example.com:5000/syft"],
)
def test_sbom_scanner_image_needs_an_exact_tag(monkeypatch: pytest.MonkeyPatch, image: str) -> None:
    monkeypatch.setenv("SERVICEBUILD_SBOM_SCANNER_IMAGE", image)
    with pytest.raises(ValidationError, match="exact release tag or a digest"):
        Settings()


@pytest.mark.parametrize(
    "image",
    [
        "docker.io/docker/buildkit-syft-scanner:stable-1",
        "mirror.example.com:5000/docker/buildkit-syft-scanner:1.9.0",
        f"mirror.example.com/syft@sha256:{'a' * 64}",
    ],
)
def test_sbom_scanner_image_by_tag_or_digest(monkeypatch: pytest.MonkeyPatch, image: str) -> None:
    monkeypatch.setenv("SERVICEBUILD_SBOM_SCANNER_IMAGE", image)
    assert Settings().sbom_scanner_image == image


def test_provenance_defaults_to_min_and_a_spec_choice_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().provenance_of(Attestations()) == Provenance.MIN
    monkeypatch.setenv("SERVICEBUILD_DEFAULT_PROVENANCE", "off")
    settings = Settings()
    assert settings.provenance_of(Attestations()) == Provenance.OFF
    assert settings.provenance_of(Attestations(provenance=Provenance.MAX)) == Provenance.MAX
    monkeypatch.setenv("SERVICEBUILD_DEFAULT_PROVENANCE", "full")
    with pytest.raises(ValidationError, match="default_provenance"):
        Settings()


def test_push_registries_per_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SERVICEBUILD_ALLOWED_PUSH_REGISTRIES",
        '{"shop": ["registry.example.com"], "*": ["registry.internal"]}',
    )
    settings = Settings()
    assert settings.push_registries_of("shop") == {"registry.example.com"}
    assert settings.push_registries_of("payments") == {"registry.internal"}


def test_push_registries_unrestricted_by_default_and_closed_without_a_wildcard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().push_registries_of("shop") is None
    monkeypatch.setenv("SERVICEBUILD_ALLOWED_PUSH_REGISTRIES", '{"shop": ["registry.example.com"]}')
    assert Settings().push_registries_of("payments") == frozenset()


@pytest.mark.parametrize(
    ("address", "listen"),
    [
        (":8082", (None, 8082)),
        ("0.0.0.0:8082", ("0.0.0.0", 8082)),  # noqa: S104 - listening on every interface is the point
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("webhooks.internal:65535", ("webhooks.internal", 65535)),
        ("[::]:8082", ("::", 8082)),
        ("[::1]:8082", ("::1", 8082)),
        ("8082", None),
        (":0", None),
        (":65536", None),
        (":", None),
        ("127.0.0.1", None),
        ("http://0.0.0.0:8082", None),
        ("0.0.0.0:8082/hooks", None),
        ("::1:8082", None),
        (" :8082", None),
    ],
)
def test_webhook_address(
    monkeypatch: pytest.MonkeyPatch, address: str, listen: object, tmp_path: Path
) -> None:
    monkeypatch.setenv("SERVICEBUILD_WEBHOOK_ADDRESS", address)
    monkeypatch.setenv("SERVICEBUILD_WEBHOOK_SECRET_FILE", str(tmp_path / "secret"))
    if listen is None:
        with pytest.raises(ValidationError, match=r"must be \[host\]:port"):
            Settings()
        with pytest.raises(ValueError, match=r"must be \[host\]:port"):
            listen_address(address)
        return
    assert Settings().webhook_listen() == listen


def test_webhooks_are_off_by_default_and_need_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().webhook_listen() is None
    monkeypatch.setenv("SERVICEBUILD_WEBHOOK_ADDRESS", "")
    assert Settings().webhook_listen() is None
    monkeypatch.setenv("SERVICEBUILD_WEBHOOK_ADDRESS", ":8082")
    with pytest.raises(ValidationError, match="needed when SERVICEBUILD_WEBHOOK_ADDRESS is set"):
        Settings()


def test_metrics_are_served_on_8081_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().metrics_listen() == (None, 8081)
    monkeypatch.setenv("SERVICEBUILD_METRICS_ADDRESS", "127.0.0.1:9100")
    assert Settings().metrics_listen() == ("127.0.0.1", 9100)
    monkeypatch.setenv("SERVICEBUILD_METRICS_ADDRESS", "")
    assert Settings().metrics_listen() is None
    monkeypatch.setenv("SERVICEBUILD_METRICS_ADDRESS", "8081")
    with pytest.raises(ValidationError, match=r"must be \[host\]:port"):
        Settings()
