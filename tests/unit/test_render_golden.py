"""We test these aspects:

- each case renders exactly its golden Job (`tests/unit/golden/<case>.yaml`; `UPDATE_GOLDEN=1` rewrites them):
  ConfigMap contexts (keys or an archive), git over HTTPS with a token and over SSH, build secrets,
  platforms, tags, cache import refs and every scheduling option; every golden file has its case;
- every rendered Job is a valid batch/v1 Job in strict mode (unknown fields fail) for Kubernetes 1.30,
  the first with `appArmorProfile`, and the newest schema kubernetes-validate ships.

The cases are `CASES` of tests/support/render.py.
"""

import os

import kubernetes_validate
import pytest
import yaml

from servicebuild.render.job import render_job
from support.render import CASES, GOLDEN, KUBERNETES_VERSIONS, build_container

# Golden files


class _GoldenDumper(yaml.SafeDumper):
    """Multi-line strings (the wrapper script) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_GoldenDumper.add_representer(str, _represent_str)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    job = render_job(*CASES[case])
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        header = f"# The Job rendered for case {case!r} of tests/support/render.py; see README.md.\n"
        path.write_text(header + yaml.dump(job, Dumper=_GoldenDumper, sort_keys=False, width=120))
    assert path.exists(), f"{path} is missing: run UPDATE_GOLDEN=1 pytest tests/unit/test_render_golden.py"
    assert job == yaml.safe_load(path.read_text())


def test_every_golden_file_has_a_case() -> None:
    assert {path.stem for path in GOLDEN.glob("*.yaml")} == set(CASES)


# Kubernetes schema


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_valid_kubernetes_job(case: str, version: str) -> None:
    kubernetes_validate.validate(render_job(*CASES[case]), version, strict=True)


def test_strict_validation_rejects_unknown_fields() -> None:
    job = render_job(*CASES["minimal"])
    build_container(job)["buildkitFlags"] = "--debug"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSIONS[-1], strict=True)
