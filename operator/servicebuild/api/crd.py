"""Generate the CRDs from the pydantic models: `python -m servicebuild.api.crd [PLURAL]` (servicebuilds by
default)."""

import json
import re
import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from servicebuild.api import models, pool

_DROPPED_KEYWORDS = {
    "title",
    "$defs",
    "$schema",
    "$id",
    "additionalProperties",
    "patternProperties",
    "readOnly",
}
_KUBERNETES_TYPE = "x-servicebuild-k8s-type"
_KUBERNETES_SCHEMA_VERSION = "v1.30.0-local"
"""Kubernetes types (e.g. Affinity) are embedded as the oldest supported Kubernetes defines them."""


@cache
def _kubernetes_definitions() -> dict[str, Any]:
    """The Kubernetes OpenAPI definitions shipped by kubernetes-validate (a development dependency)."""
    path = resources.files("kubernetes_validate") / "kubernetes-json-schema" / _KUBERNETES_SCHEMA_VERSION
    definitions: dict[str, Any] = json.loads((path / "_definitions.json").read_text())["$defs"]
    return definitions


def description_text(docstring: str) -> str:
    """A docstring as `kubectl explain` should show it: the lines of each paragraph joined into one.

    pydantic keeps a docstring's line breaks, and `kubectl explain` prints every line break it finds,
    then wraps the text again at 80 columns around it: a docstring wrapped at the source's line length
    would show as sentences broken off mid-line. A blank line still separates paragraphs.
    """
    paragraphs = re.split(r"\n\s*\n", docstring.strip())
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def _joined_docstrings(node: Any) -> Any:
    """Every description of a model's JSON schema through `description_text`."""
    if isinstance(node, list):
        return [_joined_docstrings(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: description_text(value)
        if key == "description" and isinstance(value, str)
        else _joined_docstrings(value)
        for key, value in node.items()
    }


def _kubernetes_type(name: str) -> dict[str, Any]:
    definitions = _kubernetes_definitions()
    schema = dict(_inline({"$ref": f"#/$defs/io.k8s.api.core.v1.{name}"}, definitions))
    schema["type"] = "object"
    return schema


def _unwrap(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any] | None:
    """The node a reference, an Optional or a Kubernetes type stands for; None when it is plain."""
    if _KUBERNETES_TYPE in node:
        kubernetes_schema = _kubernetes_type(node[_KUBERNETES_TYPE])
        return {
            **kubernetes_schema,
            "description": node.get("description", kubernetes_schema.get("description")),
        }
    if "$ref" in node:
        target = definitions[node["$ref"].rsplit("/", 1)[-1]]
        return {**target, **{key: value for key, value in node.items() if key != "$ref"}}
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        # Optional[X] appears as anyOf [X, null]; in the CRD an absent field means the same.
        variants = [variant for variant in node["anyOf"] if variant.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"cannot express anyOf {node['anyOf']} in a structural schema")
        return {
            **variants[0],
            **{key: value for key, value in node.items() if key not in {"anyOf", "default"}},
        }
    return None


def _structural(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """One plain node: keywords a structural schema may hold, maps typed by their values."""
    if node.get("x-kubernetes-int-or-string"):
        return {key: value for key, value in node.items() if key not in {"anyOf", "type", "title"}}
    if isinstance(node.get("type"), list):
        # Kubernetes' own schemas spell optional fields as ["string", "null"].
        (single,) = [kind for kind in node["type"] if kind != "null"]
        node = {**node, "type": single}
    schema = {key: _inline(value, definitions) for key, value in node.items() if key not in _DROPPED_KEYWORDS}
    map_values = [*node.get("patternProperties", {}).values(), node.get("additionalProperties")]
    map_values = [value for value in map_values if isinstance(value, dict)]
    if node.get("type") == "object" and "properties" not in node and map_values:
        # A map such as buildArgs: structural schemas type the values; the operator checks the keys.
        schema["additionalProperties"] = _inline(map_values[0], definitions)
        if "maxItems" in schema:
            schema["maxProperties"] = schema.pop("maxItems")
    if node.get("default") is None:
        schema.pop("default", None)
    computed = {name for name, field in node.get("properties", {}).items() if field.get("readOnly")}
    if computed and "required" in schema:
        # Fields the model computes (pydantic's readOnly) are not required: a status written by an
        # operator that does not compute them yet stays valid.
        required = [name for name in schema.pop("required") if name not in computed]
        if required:
            schema["required"] = required
    return schema


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    """Resolve `$ref`s and drop what a structural schema may not hold."""
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    unwrapped = _unwrap(node, definitions)
    if unwrapped is not None:
        return _inline(unwrapped, definitions)
    return _structural(node, definitions)


def _schema(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, Any]:
    # Kubernetes' own types are inlined after the docstrings are joined: their descriptions are kept.
    raw = _joined_docstrings(model.model_json_schema(by_alias=True, mode=mode))
    return dict(_inline(raw, raw.get("$defs", {})))


def _status_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = _schema(model, "serialization")
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions.pop("default", None)
    return schema


def _ready(field: str) -> str:
    return f'.status.conditions[?(@.type=="Ready")].{field}'


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Ready", "type": "string", "jsonPath": _ready("status")},
    {"name": "Reason", "type": "string", "jsonPath": _ready("reason")},
    # The reference a person copies: the tag to read, the digest to pull exactly what was built, whatever
    # the tag points to since.
    {"name": "Image", "type": "string", "jsonPath": ".status.output.image"},
    {"name": "Size", "type": "string", "jsonPath": ".status.output.size"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Commit", "type": "string", "jsonPath": ".status.source.shortCommit", "priority": 1},
    {"name": "Duration", "type": "string", "jsonPath": ".status.duration", "priority": 1},
    {"name": "Cached", "type": "string", "jsonPath": ".status.cache.summary", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": _ready("message"), "priority": 1},
]
"""`kubectl get sb`; `-o wide` adds the priority 1 columns. Each is one JSONPath, which the API server
evaluates with client-go's jsonpath (filters included), so the status carries the preformatted values."""


@dataclass(frozen=True)
class _Resource:
    """What differs between the operator's CRDs."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: list[dict[str, Any]]


POOL_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Ready", "type": "string", "jsonPath": _ready("status")},
    {"name": "Reason", "type": "string", "jsonPath": _ready("reason")},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
"""`kubectl get builderpools`; `-o wide` adds the endpoint."""

_SERVICEBUILDS = _Resource(
    kind=models.KIND,
    plural=models.PLURAL,
    singular=models.SINGULAR,
    # In no category, `all` least: `kubectl delete all --all` is for workloads and must not
    # take a namespace's build definitions and their history with it (docs/servicebuild.md).
    short_names=models.SHORT_NAMES,
    description="Builds one service's image in-cluster and pushes it.",
    spec=models.ServiceBuildSpec,
    status=models.ServiceBuildStatus,
    columns=PRINTER_COLUMNS,
)
_BUILDERPOOLS = _Resource(
    kind=pool.POOL_KIND,
    plural=pool.POOL_PLURAL,
    singular=pool.POOL_SINGULAR,
    short_names=pool.POOL_SHORT_NAMES,
    description="A long-running rootless BuildKit daemon, with its cache, for the builds of its namespace.",
    spec=pool.BuilderPoolSpec,
    status=pool.BuilderPoolStatus,
    columns=POOL_PRINTER_COLUMNS,
)
RESOURCES = {resource.plural: resource for resource in (_SERVICEBUILDS, _BUILDERPOOLS)}
"""Each CRD the operator installs, by its plural."""


def _crd(resource: _Resource) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{models.GROUP}"},
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(resource.short_names),
            },
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": resource.columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": resource.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": f"The API version: `{models.GROUP}/{models.VERSION}`.",
                                },
                                "kind": {
                                    "type": "string",
                                    "description": f"The kind of object: `{resource.kind}`.",
                                },
                                "metadata": {
                                    "type": "object",
                                    "description": "Standard object metadata: name, namespace, labels.",
                                },
                                "spec": _schema(resource.spec, "validation"),
                                "status": _status_schema(resource.status),
                            },
                        },
                    },
                },
            ],
        },
    }


def build_crd(plural: str = models.PLURAL) -> dict[str, Any]:
    """The CustomResourceDefinition of `plural` (default: ServiceBuilds) as a dict."""
    return _crd(RESOURCES[plural])


def render_crd(plural: str = models.PLURAL) -> str:
    header = f"# Generated by `make crds` from operator/servicebuild/api/{_SOURCES[plural]}. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(plural), sort_keys=False, width=120)


_SOURCES = {models.PLURAL: "models.py", pool.POOL_PLURAL: "pool.py"}


if __name__ == "__main__":
    sys.stdout.write(render_crd(*sys.argv[1:2]))
