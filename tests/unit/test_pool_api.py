"""The BuilderPool API: its CRD and its model agree.

We test these aspects:
- the committed CRD is what the models generate (`make crds`), and crds/kustomization.yaml installs it;
- the defaults: an emptyDir of 10Gi, 4 concurrent builds, scaled to zero after 30m idle;
- the API server (the CRD's schema and CEL rules) and the model accept and reject the same specs, each
  rejection naming the field;
- a spec the model rejects parses as an InvalidBuilderPool naming the field; an unreadable status counts
  as empty.
"""

from pathlib import Path
from typing import Any

import pytest
import yaml

from servicebuild.api.crd import render_crd
from servicebuild.api.pool import (
    POOL_PLURAL,
    BuilderPool,
    BuilderPoolSpec,
    InvalidBuilderPool,
    parse_builderpool,
)
from support.crd_schema import crd_errors

ROOT = Path(__file__).resolve().parents[2]
POOL_CRD = ROOT / "crds" / "builderpools.servicebuild.dev.yaml"


def pool_schema() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(POOL_CRD.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def pool_object(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "servicebuild.dev/v1alpha1",
        "kind": "BuilderPool",
        "metadata": {"name": "shop-builders", "namespace": "shop", "uid": "u-1", "generation": 1},
        "spec": spec,
    }


def test_committed_crd_matches_the_models() -> None:
    assert POOL_CRD.read_text() == render_crd(POOL_PLURAL), "crds/ drifted from the models: run `make crds`"


def test_the_crds_kustomization_installs_it() -> None:
    kustomization = yaml.safe_load((ROOT / "crds" / "kustomization.yaml").read_text())
    assert POOL_CRD.name in kustomization["resources"]


def test_defaults() -> None:
    spec = BuilderPoolSpec.model_validate({})
    assert spec.storage.empty_dir is not None
    assert spec.storage.empty_dir.size_limit == "10Gi"
    assert spec.storage.persistent_volume_claim is None
    assert spec.max_concurrent_builds == 4
    assert spec.idle_timeout_seconds == 30 * 60
    assert spec.builder_image is None


VALID = [
    {},
    {"storage": {"emptyDir": {"sizeLimit": "20Gi"}}},
    {"storage": {"persistentVolumeClaim": {"size": "50Gi", "storageClassName": "fast-ssd"}}},
    {"maxConcurrentBuilds": 64, "idleTimeout": "0s"},
    {"idleTimeout": "1h30m", "resources": {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi"}}},
    {"builderImage": "registry.example.com/buildkit:v0.32.2-rootless"},
]


@pytest.mark.parametrize("spec", VALID)
def test_schema_and_model_accept(spec: dict[str, Any]) -> None:
    assert crd_errors(pool_object(spec), pool_schema()) == []
    assert isinstance(parse_builderpool(pool_object(spec)), BuilderPool)


INVALID = [
    ({"storage": {}}, "spec.storage"),
    (
        {"storage": {"emptyDir": {}, "persistentVolumeClaim": {"size": "1Gi"}}},
        "spec.storage",
    ),
    ({"storage": {"persistentVolumeClaim": {}}}, "spec.storage.persistentVolumeClaim"),
    ({"storage": {"emptyDir": {"sizeLimit": "lots"}}}, "spec.storage.emptyDir.sizeLimit"),
    ({"maxConcurrentBuilds": 0}, "spec.maxConcurrentBuilds"),
    ({"maxConcurrentBuilds": 65}, "spec.maxConcurrentBuilds"),
    ({"idleTimeout": "half an hour"}, "spec.idleTimeout"),
    ({"builderImage": "Not An Image"}, "spec.builderImage"),
    ({"replicas": 3}, "spec.replicas"),
]


@pytest.mark.parametrize(("spec", "field"), INVALID)
def test_schema_and_model_reject_naming_the_field(spec: dict[str, Any], field: str) -> None:
    errors = crd_errors(pool_object(spec), pool_schema())
    assert errors
    assert any(field.removeprefix("spec.") in error for error in errors), errors
    parsed = parse_builderpool(pool_object(spec))
    assert isinstance(parsed, InvalidBuilderPool)
    assert field in parsed.problem


def test_an_unreadable_status_counts_as_empty() -> None:
    body = {**pool_object({}), "status": {"conditions": "not a list"}}
    parsed = parse_builderpool(body)
    assert isinstance(parsed, BuilderPool)
    assert parsed.status.conditions == []
