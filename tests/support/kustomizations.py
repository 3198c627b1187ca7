"""The kustomizations the deploy tests render: deploy/'s own, and each optional component of
deploy/components applied to the base (tests/unit/kustomizations/), since a component is no whole install
on its own."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
APPLIED_COMPONENTS = ROOT / "tests" / "unit" / "kustomizations"


def _kind(directory: Path) -> str:
    return str(yaml.safe_load((directory / "kustomization.yaml").read_text()).get("kind", "Kustomization"))


def components() -> list[Path]:
    """The optional components of deploy/."""
    return sorted(
        path.parent
        for path in (ROOT / "deploy").glob("**/kustomization.yaml")
        if _kind(path.parent) == "Component"
    )


def applied_components() -> list[Path]:
    """The test kustomizations that apply a component to the base."""
    return sorted(path.parent for path in APPLIED_COMPONENTS.glob("*/kustomization.yaml"))


def kustomizations() -> list[Path]:
    """Every whole install to render: the base and overlays of deploy/, and the base with each component."""
    deploy = [path.parent for path in (ROOT / "deploy").glob("**/kustomization.yaml")]
    return sorted([path for path in deploy if _kind(path) != "Component"] + applied_components())
