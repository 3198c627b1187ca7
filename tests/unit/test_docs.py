"""The user documentation (README.md and docs/) against the code it describes.

We test these aspects:
- every relative link of the README and of docs/ names a file that exists and, with `#anchor`, a
  heading of that page (only docs/architecture.md, being written, may be linked before it exists);
- every `docs/<page>#<anchor>` a CRD description points `kubectl explain` readers to exists;
- the failure-reasons page has a row for every reason a build can end `Stalled` with: every
  `failures.Reason`, the reasons of the operator's own checks before a Job, and those of the git and
  registry errors it turns into reasons;
- every built-in Kubernetes object the documentation shows (e.g. RBAC roles) is valid at the oldest
  Kubernetes the operator supports and the newest the schema package knows.

(The ServiceBuild examples are checked against the CRD in test_manifests.py, the settings table
against the model in test_command_line.py.)
"""

import re
from pathlib import Path

import kubernetes_validate
import pytest

from servicebuild import failures
from servicebuild.api.crd import render_crd
from servicebuild.gitremote import GitError
from servicebuild.registry import RegistryError
from support import docs

KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]
"""The build Jobs need Kubernetes 1.30 (appArmorProfile), as docs/operations.md says."""


def _target(page: Path, link: str) -> tuple[Path, str]:
    path, _, fragment = link.partition("#")
    return (page if not path else (page.parent / path).resolve()), fragment


@pytest.mark.parametrize("page", docs.pages(), ids=docs.relative)
def test_relative_links_name_existing_pages_and_headings(page: Path) -> None:
    broken = []
    for link in docs.links(page):
        if re.match(r"^[a-z]+:", link):
            continue
        target, fragment = _target(page, link)
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif fragment and fragment not in docs.anchors(target):
            broken.append(f"{link}: no heading with that anchor")
    assert broken == []


def test_crd_descriptions_point_to_existing_sections() -> None:
    references = set(re.findall(r"\b(docs/[\w-]+\.md)(?:#([\w-]+))?", render_crd()))
    assert references
    broken = [
        f"{path}#{fragment}"
        for path, fragment in sorted(references)
        if not (docs.ROOT / path).exists() or (fragment and fragment not in docs.anchors(docs.ROOT / path))
    ]
    assert broken == []


def _subclasses(cls: type) -> set[type]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _subclasses(sub)
    return found


def stalled_reasons() -> set[str]:
    """Every reason a build can end `Stalled` with, from the code."""
    reasons = {str(reason) for reason in failures.Reason}
    # The reconciler turns permanent git errors into their `reason`, registry errors into their class name.
    reasons |= {cls.reason for cls in _subclasses(GitError) if not cls.transient}
    reasons |= {cls.__name__ for cls in _subclasses(RegistryError) if not cls.transient}
    return reasons


def test_every_stalled_reason_has_a_row_on_the_failure_reasons_page() -> None:
    page = (docs.DOCS / "failure-reasons.md").read_text()
    documented = {
        reason
        for cell in re.findall(r"^\| ((?:`[A-Za-z]+`(?:, )?)+) \|", page, flags=re.MULTILINE)
        for reason in re.findall(r"`([A-Za-z]+)`", cell)
    }
    reasons = stalled_reasons()
    assert {"InvalidSpec", "SecretNotFound", "RegistryNotAllowed", "JobRejected"} <= reasons
    assert sorted(reasons - documented) == []


def built_in_objects() -> list[object]:
    return [
        pytest.param(doc, id=f"{docs.relative(page)}:{doc['kind']}/{doc['metadata']['name']}")
        for page in docs.pages()
        for doc in docs.yaml_documents(page)
        if isinstance(doc, dict) and "kind" in doc and doc.get("kind") != "ServiceBuild"
    ]


def test_the_documentation_shows_built_in_objects() -> None:
    assert built_in_objects()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("obj", built_in_objects())
def test_documented_built_in_objects_are_valid_kubernetes(obj: dict[str, object], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)
