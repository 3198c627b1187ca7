"""The kustomizations the deploy tests render: deploy/'s own, and each optional component of
deploy/components applied to the base (tests/unit/kustomizations/), since a component is no whole install
on its own."""

import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
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


def require(tool: str) -> str:
    """The path of a tool CI must have: a missing one fails the test, it never skips it."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not on the PATH; .ci/run installs it")
    return path


@cache
def render(directory: Path) -> tuple[dict[str, Any], ...]:
    """The objects `kubectl kustomize directory` renders."""
    result = subprocess.run(
        [require("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory}:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
