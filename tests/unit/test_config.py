"""We test these aspects of the settings, read from SERVICEBUILD_* variables as the operator reads them:

- comma-separated lists become sets, blanks ignored;
- the BuildKit image must be an exact tag (no implicit tag, no `latest`);
- the per-namespace push registries parse from JSON, with `*` for the namespaces not named.
"""

import pytest
from pydantic import ValidationError

from servicebuild.config import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INSECURE_REGISTRIES", "BUILDKIT_IMAGE", "ALLOWED_PUSH_REGISTRIES", "NAMESPACES"):
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
