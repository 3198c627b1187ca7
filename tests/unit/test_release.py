"""The release: one version, the operator image, install.yaml and the changelog.

We test these aspects:
- install.yaml is what `make release-manifests` renders from crds/ and deploy/ now, so a change to either
  without re-rendering fails here, naming the command to run;
- install.yaml holds everything the base installs, the CRD unchanged, the operator running the Makefile's
  placeholder image for the current version, and every object labelled with that version;
- `make release-manifests IMAGE=…` pins the operator to the image given, and nothing else changes; an
  image without a tag or digest is refused before anything is written;
- `make image` prints its build (with the version as a build argument) and push for the engine chosen, and
  fails with a message naming what is missing when IMAGE or every engine is; the Dockerfile labels the
  image with that build argument, and copies into it the `buildctl` of the BuildKit image that config.py
  runs by default (pinned in one place each, kept equal here);
- the README's install section starts with `kubectl apply --server-side -f install.yaml`, names the
  placeholder and says that no image is published;
- the changelog's newest release is the package's version and has an Upgrading section; the image tags
  the documentation and deploy/ name are that version.
"""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from servicebuild.config import Settings

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "install.yaml"
CRD_FILE = ROOT / "crds" / "servicebuilds.servicebuild.dev.yaml"
VERSION_LABEL = "app.kubernetes.io/version"
DIGEST = "sha256:" + "0123456789abcdef" * 4


@cache
def version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def placeholder_image() -> str:
    return f"registry.example.com/platform/servicebuild-operator:{version()}"


def make(*arguments: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """`make` in the repository, as a user runs it: no IMAGE, ENGINE or make flags from our environment."""
    tool = shutil.which("make")
    if tool is None:
        pytest.fail("make is not on the PATH; .ci/run installs it")
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"IMAGE", "ENGINE", "RELEASE_MANIFEST", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"}
    }
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [tool, "--no-print-directory", f"PYTHON={sys.executable}", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(tmp_path: Path, *arguments: str) -> str:
    output = tmp_path / "install.yaml"
    done = make("release-manifests", f"RELEASE_MANIFEST={output}", *arguments)
    assert done.returncode == 0, done.stderr
    return output.read_text()


def operator_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [obj for obj in objects if obj["kind"] == "Deployment"]
    return deployment


# install.yaml


def test_install_yaml_is_what_make_release_manifests_renders(tmp_path: Path) -> None:
    assert render(tmp_path) == INSTALL.read_text(), (
        "install.yaml differs from what crds/ and deploy/ render now: run `make release-manifests`"
    )


def test_install_yaml_installs_the_base_pinned_to_the_placeholder_image() -> None:
    installed = documents(INSTALL.read_text())
    assert {obj["kind"] for obj in installed} >= {
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    }
    crds = {obj["metadata"]["name"]: obj for obj in installed if obj["kind"] == "CustomResourceDefinition"}
    generated = [
        yaml.safe_load(path.read_text()) for path in sorted(CRD_FILE.parent.glob("*.servicebuild.dev.yaml"))
    ]
    assert set(crds) == {crd["metadata"]["name"] for crd in generated}
    for crd in generated:
        assert crds[crd["metadata"]["name"]]["spec"] == crd["spec"]
    (container,) = operator_deployment(installed)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == placeholder_image()
    assert {obj["metadata"]["labels"][VERSION_LABEL] for obj in installed} == {version()}
    assert INSTALL.read_text().startswith(f"# servicebuild-operator {version()}: ")


def test_release_manifests_pin_the_image_given_and_change_nothing_else(tmp_path: Path) -> None:
    image = f"registry.internal:5443/platform/servicebuild-operator@{DIGEST}"
    pinned = documents(render(tmp_path, f"IMAGE={image}"))
    (container,) = operator_deployment(pinned)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image
    container["image"] = placeholder_image()
    assert pinned == documents(INSTALL.read_text())


@pytest.mark.parametrize(
    "image", ["registry.internal:5443/servicebuild-operator", "servicebuild-operator@sha256:0123", "a b:1"]
)
def test_release_manifests_refuse_an_image_without_a_tag_or_digest(tmp_path: Path, image: str) -> None:
    output = tmp_path / "install.yaml"
    done = make("release-manifests", f"RELEASE_MANIFEST={output}", f"IMAGE={image}")
    assert done.returncode != 0
    assert f"IMAGE={image} is no image reference with a tag or a digest" in done.stderr
    assert not output.exists()


# make image


def test_make_image_builds_with_the_version_then_pushes() -> None:
    done = make("--dry-run", "image", "IMAGE=registry.internal/servicebuild-operator:rc1", "ENGINE=podman")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"podman build --build-arg VERSION={version()} --tag registry.internal/servicebuild-operator:rc1 .",
        "podman push registry.internal/servicebuild-operator:rc1",
    ]


def test_make_image_without_image_says_so() -> None:
    done = make("--dry-run", "image", "ENGINE=podman")
    assert done.returncode != 0
    assert "make image needs IMAGE=registry/name:tag" in done.stderr
    assert "build" not in done.stdout


def test_make_image_without_an_engine_on_the_path_says_so(tmp_path: Path) -> None:
    done = make("--dry-run", "image", "IMAGE=registry.internal/servicebuild-operator:rc1", path=str(tmp_path))
    assert done.returncode != 0
    assert "make image needs docker, podman or buildah on the PATH" in done.stderr
    assert "build" not in done.stdout


def test_the_image_is_labelled_with_the_version_build_argument() -> None:
    final_stage = (ROOT / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    assert re.search(r"^ARG VERSION$", final_stage, flags=re.MULTILINE)
    assert "org.opencontainers.image.version=${VERSION}" in final_stage


def test_the_image_holds_the_buildctl_of_the_default_builder_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pinned = re.findall(r"^ARG BUILDKIT_IMAGE=(\S+)$", dockerfile, flags=re.MULTILINE)
    assert pinned == [Settings.model_fields["buildkit_image"].default]
    assert re.search(r"^FROM \$\{BUILDKIT_IMAGE\} AS buildkit$", dockerfile, flags=re.MULTILINE)
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "COPY --from=buildkit /usr/bin/buildctl /usr/local/bin/buildctl" in final_stage


# Documentation


def test_the_readme_install_section_starts_with_the_server_side_apply() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Install on a cluster\n", 1)[1].split("\n## ", 1)[0]
    (first_block, *_) = re.findall(r"^```sh\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    assert first_block.splitlines()[0] == "kubectl apply --server-side -f install.yaml"
    assert placeholder_image() in section
    assert "no published operator image" in " ".join(section.split())


def test_the_changelog_newest_release_is_this_version_with_upgrade_notes() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[([^\]]+)\]", changelog, flags=re.MULTILINE)
    releases = [release for release in releases if release != "Unreleased"]  # Keep a Changelog's next one
    assert releases[0] == version(), "add a CHANGELOG.md section for the version in pyproject.toml"
    newest = changelog.split(f"\n## [{version()}]", 1)[1].split("\n## ", 1)[0]
    assert "\n### Upgrading\n" in newest


def test_documented_and_deployed_image_tags_are_this_version() -> None:
    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "deploy").glob("**/*.yaml")]
    tags = {
        (page.relative_to(ROOT).as_posix(), tag)
        for page in pages
        for tag in re.findall(r"servicebuild-operator:(\d+\.\d+\.\d+\S*?)[\s`.,)]", page.read_text())
    }
    production = ROOT / "deploy" / "overlays" / "production" / "kustomization.yaml"
    tags |= {
        (production.parent.name, image["newTag"])
        for image in yaml.safe_load(production.read_text())["images"]
    }
    assert tags
    assert {tag for _, tag in tags} == {version()}, f"set these to the version in pyproject.toml: {tags}"
