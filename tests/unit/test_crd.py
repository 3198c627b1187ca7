"""We test these aspects:

- the committed CRD is exactly what `make crds` generates from the models (no drift);
- the schema is structural: typed everywhere, no refs, no open objects, no unknown-field escape hatch;
- `kubectl explain` has a description for every field, spec and status, down to the embedded
  core/v1 Affinity (whose descriptions are Kubernetes' own);
- every description of ours reads well in `kubectl explain`: whole sentences, and no line break
  inside a paragraph (kubectl prints it and wraps around it, breaking the sentence off);
- every time field is a `format: date-time` string, and the schema checker here checks that format
  as the API server does (RFC 3339 with a zone), for every format the CRD uses;
- the CRD is a valid apiextensions.k8s.io/v1 object;
- the API server would accept valid ServiceBuilds and reject invalid ones, naming the field
  (OpenAPI keywords, unknown fields and CEL rules, evaluated like the server does);
- what the schema accepts the operator's model accepts too, and the reverse for rejections.
"""

import re
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from servicebuild.api.crd import build_crd, description_text, render_crd
from servicebuild.api.models import ServiceBuildSpec
from support.crd_schema import CRD_PATH, FORMATS, crd_errors, object_schema

_FORBIDDEN = {
    "$ref",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "patternProperties",
    "x-kubernetes-preserve-unknown-fields",
}


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for key, child in schema.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def test_committed_crd_matches_the_models() -> None:
    assert CRD_PATH.read_text() == render_crd(), "crds/ drifted from the models: run `make crds`"


@pytest.mark.parametrize(("path", "node"), list(_nodes(object_schema())), ids=lambda value: str(value)[:60])
def test_every_schema_node_is_structural(path: str, node: dict[str, Any]) -> None:
    assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
    assert not _FORBIDDEN & node.keys(), f"{path} uses {_FORBIDDEN & node.keys()}"
    if "properties" in node:
        assert "additionalProperties" not in node, f"{path} mixes properties and additionalProperties"
    if node.get("type") == "object" and path in {".spec", ".status"}:
        assert node.get("properties"), f"{path} is an open object"


KUBERNETES_DESCRIBED = ".spec.affinity."
"""Below this path the descriptions are Kubernetes' own (core/v1 Affinity), in its style: they start with
the field's name in lower case, and some end without a full stop."""
_PARAGRAPH = re.compile(r"[A-Z`].*\.")
"""One or more whole sentences on one line (`.` matches no line break)."""


def _descriptions() -> Iterator[tuple[str, str]]:
    for path, node in _nodes(object_schema()):
        if "description" in node:
            yield path, node["description"]


@pytest.mark.parametrize(
    ("docstring", "text"),
    [
        pytest.param("One line.", "One line.", id="one line"),
        pytest.param(
            "Wrapped at the source's\nline length.", "Wrapped at the source's line length.", id="wrapped"
        ),
        pytest.param(
            "A first,\nwrapped paragraph.\n\nA second.", "A first, wrapped paragraph.\n\nA second.", id="two"
        ),
        pytest.param("Spaces  and\n    indents \n", "Spaces and indents", id="whitespace"),
    ],
)
def test_docstrings_become_descriptions_with_one_line_per_paragraph(docstring: str, text: str) -> None:
    assert description_text(docstring) == text


def test_every_field_has_a_description() -> None:
    fields = [path for path, _ in _nodes(object_schema()) if path and not path.endswith(("[]", "{}"))]
    assert any(path.startswith(KUBERNETES_DESCRIBED) for path in fields)
    assert any(path.startswith(".status.") for path in fields)
    described = {path for path, description in _descriptions() if description.strip()}
    assert [path for path in fields if path not in described] == []


def test_our_descriptions_are_whole_sentences_without_line_breaks() -> None:
    broken = {
        path: description
        for path, description in _descriptions()
        if not path.startswith(KUBERNETES_DESCRIBED)
        and not all(
            _PARAGRAPH.fullmatch(paragraph) and paragraph == " ".join(paragraph.split())
            for paragraph in description.split("\n\n")
        )
    }
    assert broken == {}


TIME_FIELDS = {
    ".status.startTime",
    ".status.completionTime",
    ".status.conditions[].lastTransitionTime",
    ".status.queue.since",
    ".status.history[].startTime",
    ".status.history[].completionTime",
}
_NAMED_LIKE_A_TIME = re.compile(r"(Time|Timestamp|At|\.since)$")


def test_time_fields_are_date_time_strings() -> None:
    nodes = dict(_nodes(object_schema()))
    dated = {path for path, node in nodes.items() if node.get("format") == "date-time"}
    named = {
        path
        for path in nodes
        if _NAMED_LIKE_A_TIME.search(path) and not path.startswith(KUBERNETES_DESCRIBED)
    }
    assert dated == named == TIME_FIELDS
    assert {nodes[path]["type"] for path in dated} == {"string"}


def test_the_schema_checker_knows_every_string_format_of_the_crd() -> None:
    formats = {
        node["format"]
        for _, node in _nodes(object_schema())
        if node.get("type") == "string" and "format" in node
    }
    assert formats <= set(FORMATS.checkers)


@pytest.mark.parametrize(
    ("time", "valid"),
    [
        ("2026-11-28T10:15:00Z", True),  # what the operator writes (UTC, `%Y-%m-%dT%H:%M:%SZ`)
        ("2026-11-28T10:15:00.123456+01:00", True),
        ("2026-11-28t10:15:00z", True),
        ("2026-11-28T10:15:00", False),  # no zone
        ("2026-11-28 10:15:00Z", False),
        ("20261128101500", False),
        ("2026-13-28T10:15:00Z", False),
        ("2026-11-28T24:00:00Z", False),
        ("", False),
    ],
)
def test_the_api_server_checks_a_status_time_as_rfc3339(time: str, valid: bool) -> None:
    obj = _servicebuild()
    obj["status"] = {"queue": {"position": 1, "since": time}}
    expected = [] if valid else [f"status.queue.since: {time!r} is not a 'date-time'"]
    assert crd_errors(obj) == expected


def test_crd_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate.validate(build_crd(), "1.33", strict=True)


def test_crd_has_status_subresource_columns_and_short_name() -> None:
    spec = build_crd()["spec"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [column["name"] for column in version["additionalPrinterColumns"]][:4] == [
        "Phase",
        "Image",
        "Size",
        "Age",
    ]
    assert spec["names"]["shortNames"] == ["sb"]


def _servicebuild(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "source": {"configMap": {"name": "checkout-context"}},
        "output": {"image": "registry.example.com/shop/checkout:1.4.2"},
    }
    base.update(spec)
    return {
        "apiVersion": "servicebuild.dev/v1alpha1",
        "kind": "ServiceBuild",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": base,
    }


VALID = {
    "minimal": {},
    "everything": {
        "dockerfile": "docker/build/Dockerfile",
        "target": "runtime",
        "buildArgs": {"GO_VERSION": "1.23", "_X": ""},
        "output": {"image": "localhost:5001/shop/checkout:1.4.2", "pushSecret": "registry-push"},
        "cache": {"mode": "min", "ref": "registry.example.com/cache/checkout:main"},
        "timeout": "1h30m",
    },
    "cache disabled": {"cache": {"disabled": True}},
    "docker hub short name": {"output": {"image": "nginx"}},
    "dotfile dockerfile": {"dockerfile": ".docker/Dockerfile"},
    "git https with everything": {
        "source": {
            "git": {
                "url": "https://git.example.com/shop/monorepo.git",
                "revision": "release/1.x",
                "contextDir": "services/checkout",
                "authSecret": "git-creds",
            },
        },
        "output": {
            "image": "r.io/shop/checkout:main",
            "tags": ["main-{shortCommit}", "{commit}", "b{generation}"],
        },
    },
    "git ssh url": {"source": {"git": {"url": "ssh://git@git.example.com:2222/shop/repo.git"}}},
    "git scp-style url": {"source": {"git": {"url": "git@github.com:shop/repo.git", "revision": "a" * 40}}},
    "configmap archive": {"source": {"configMap": {"name": "ctx", "archive": "context.tar.gz"}}},
    "build secrets": {
        "secrets": [
            {"id": "npmrc", "secretRef": {"name": "npm", "key": ".npmrc"}},
            {"id": "sentry_token", "secretRef": {"name": "sentry", "key": "token"}},
        ],
    },
    "platforms": {"platforms": ["linux/amd64", "linux/arm64", "linux/arm/v7"]},
    "timestamp tags": {"output": {"image": "r.io/a/b:1", "tags": ["{timestamp}", "v1.{generation}"]}},
    "cache import refs": {"cache": {"importRefs": ["r.io/shop/checkout:buildcache-main"]}},
    "scheduling": {
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": 4294967296}},
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "tolerations": [{"key": "builds", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["builders"]}]}
                    ],
                },
            },
        },
        "serviceAccountName": "builder",
        "priorityClassName": "batch-low",
        "queueName": "team-a",
        "builderImage": "registry.example.com/buildkit:v0.32.2-rootless",
        "pendingTimeout": "5m",
    },
}

INVALID = {
    "no source": ({"source": {}}, "spec.source"),
    "no output": ({"output": None}, "'output' is a required property"),
    "uppercase image": ({"output": {"image": "Registry/Shop:1"}}, "spec.output.image"),
    "digest image": ({"output": {"image": "r.io/a/b@sha256:" + "0" * 64}}, "spec.output.image"),
    "unknown field": ({"dockerfiles": "x"}, "spec.dockerfiles"),
    "cache mode": ({"cache": {"mode": "medium"}}, "spec.cache.mode"),
    "absolute dockerfile": ({"dockerfile": "/etc/passwd"}, "spec.dockerfile"),
    "climbing dockerfile": ({"dockerfile": "../other/Dockerfile"}, "spec.dockerfile"),
    "zero timeout": ({"timeout": "0m"}, "spec.timeout"),
    "bad timeout": ({"timeout": "ten minutes"}, "spec.timeout"),
    "bad configmap name": ({"source": {"configMap": {"name": "Not_A_Name"}}}, "spec.source.configMap.name"),
    "bad push secret": ({"output": {"image": "r.io/a:1", "pushSecret": "UPPER"}}, "spec.output.pushSecret"),
    "two sources": (
        {"source": {"configMap": {"name": "ctx"}, "git": {"url": "https://g.io/a/b.git"}}},
        "spec.source",
    ),
    "git url without .git": ({"source": {"git": {"url": "https://g.io/a/b"}}}, "spec.source.git.url"),
    "git file url": ({"source": {"git": {"url": "file:///etc/repo.git"}}}, "spec.source.git.url"),
    "git url with fragment": (
        {"source": {"git": {"url": "https://g.io/a/b.git#main"}}},
        "spec.source.git.url",
    ),
    "climbing revision": ({"source": {"git": {"url": "https://g.io/a.git", "revision": "a..b"}}}, "revision"),
    "option-like revision": (
        {"source": {"git": {"url": "https://g.io/a.git", "revision": "-x"}}},
        "revision",
    ),
    "climbing contextDir": (
        {"source": {"git": {"url": "https://g.io/a.git", "contextDir": "services/../../etc"}}},
        "spec.source.git.contextDir",
    ),
    "absolute contextDir": (
        {"source": {"git": {"url": "https://g.io/a.git", "contextDir": "/services"}}},
        "spec.source.git.contextDir",
    ),
    "unknown git field": ({"source": {"git": {"url": "https://g.io/a.git", "branch": "x"}}}, "branch"),
    "archive not tar.gz": ({"source": {"configMap": {"name": "ctx", "archive": "ctx.zip"}}}, "archive"),
    "secret id with slash": (
        {"secrets": [{"id": "a/b", "secretRef": {"name": "s", "key": "k"}}]},
        "spec.secrets[0].id",
    ),
    "secret ids repeated": (
        {"secrets": [{"id": "a", "secretRef": {"name": "s", "key": "k"}}] * 2},
        "spec.secrets",
    ),
    "secret without key": ({"secrets": [{"id": "a", "secretRef": {"name": "s"}}]}, "key"),
    "platform not os/arch": ({"platforms": ["amd64"]}, "spec.platforms[0]"),
    "platforms repeated": ({"platforms": ["linux/amd64", "linux/amd64"]}, "spec.platforms"),
    "unknown placeholder": ({"output": {"image": "r.io/a:1", "tags": ["{branch}"]}}, "spec.output.tags[0]"),
    "tag starting with dot": ({"output": {"image": "r.io/a:1", "tags": [".x"]}}, "spec.output.tags[0]"),
    "commit tag without git": ({"output": {"image": "r.io/a:1", "tags": ["{commit}"]}}, "output.tags"),
    "bad cache import ref": ({"cache": {"importRefs": ["Not A Ref"]}}, "spec.cache.importRefs[0]"),
    "bad quantity": ({"resources": {"limits": {"memory": "lots"}}}, "spec.resources.limits"),
    "bad toleration operator": ({"tolerations": [{"key": "a", "operator": "Maybe"}]}, "operator"),
    "unknown affinity field": ({"affinity": {"nodeAffinityy": {}}}, "nodeAffinityy"),
    "bad service account": ({"serviceAccountName": "Builder!"}, "spec.serviceAccountName"),
    "bad queue name": ({"queueName": "team a"}, "spec.queueName"),
    "bad builder image": ({"builderImage": "Not An Image"}, "spec.builderImage"),
    "zero pending timeout": ({"pendingTimeout": "0s"}, "spec.pendingTimeout"),
}


def _drop_none(spec: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in spec.items() if value is not None}


@pytest.mark.parametrize("spec", VALID.values(), ids=VALID.keys())
def test_schema_and_model_accept_valid_specs(spec: dict[str, Any]) -> None:
    obj = _servicebuild(**spec)
    assert crd_errors(obj) == []
    ServiceBuildSpec.model_validate(obj["spec"])


@pytest.mark.parametrize(("spec", "field"), INVALID.values(), ids=INVALID.keys())
def test_schema_and_model_reject_invalid_specs_naming_the_field(spec: dict[str, Any], field: str) -> None:
    obj = _servicebuild(**spec)
    obj["spec"] = _drop_none(obj["spec"])
    errors = crd_errors(obj)
    assert errors, "the API server would accept this"
    assert any(field in error for error in errors), errors
    with pytest.raises(ValidationError):
        ServiceBuildSpec.model_validate(obj["spec"])
