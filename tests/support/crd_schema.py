"""Validate objects against the committed CRD the way the API server does at `kubectl apply`.

The OpenAPI keywords are checked with jsonschema, unknown fields as `kubectl apply` (strict field
validation) rejects them, and the CEL `x-kubernetes-validations` rules with cel-python.
"""

from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

CRD_PATH = Path(__file__).parents[2] / "crds" / "servicebuilds.servicebuild.dev.yaml"


@cache
def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return loaded


def object_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _unknown_fields(schema: dict[str, Any], value: Any, path: str) -> Iterator[str]:
    if isinstance(value, dict):
        properties = schema.get("properties")
        if properties is not None:
            for key, item in value.items():
                if key not in properties:
                    yield f"{path}.{key}: unknown field".removeprefix(".")
                else:
                    yield from _unknown_fields(properties[key], item, f"{path}.{key}".removeprefix("."))
        elif isinstance(schema.get("additionalProperties"), dict):
            for key, item in value.items():
                yield from _unknown_fields(schema["additionalProperties"], item, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _unknown_fields(schema["items"], item, f"{path}[{index}]")


def _cel_failures(schema: dict[str, Any], value: Any, path: str) -> Iterator[str]:
    environment = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations", []):
        program = environment.program(environment.compile(rule["rule"]))
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            yield f"{path}: {rule.get('message', rule['rule'])}"
    if isinstance(value, dict):
        for key, item in value.items():
            child = schema.get("properties", {}).get(key) or schema.get("additionalProperties")
            if isinstance(child, dict):
                yield from _cel_failures(child, item, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _cel_failures(schema["items"], item, f"{path}[{index}]")


def _duplicates(schema: dict[str, Any], value: Any, path: str) -> Iterator[str]:
    """`x-kubernetes-list-type` set (unique items) and map (unique keys), as the API server checks them."""
    if isinstance(value, list):
        list_type = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys", [])
        identities = [
            tuple(item.get(key) for key in keys) if list_type == "map" else repr(item) for item in value
        ]
        for index, identity in enumerate(identities):
            if list_type in {"set", "map"} and identity in identities[:index]:
                yield f"{path}[{index}]: Duplicate value"
        for index, item in enumerate(value):
            yield from _duplicates(schema.get("items", {}), item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            child = schema.get("properties", {}).get(key) or schema.get("additionalProperties")
            if isinstance(child, dict):
                yield from _duplicates(child, item, f"{path}.{key}" if path else key)


def _path(parts: Iterable[str | int]) -> str:
    """`spec.platforms[0]`, the way the API server names a field."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts).removeprefix(".")


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Why the API server would reject this ServiceBuild; empty when it would accept it."""
    schema = object_schema()
    validator = jsonschema.Draft4Validator(schema)
    errors = [f"{_path(error.absolute_path)}: {error.message}" for error in validator.iter_errors(obj)]
    errors += _unknown_fields(schema, obj, "")
    errors += _duplicates(schema, obj, "")
    if not errors:
        errors += _cel_failures(schema, obj, "")
    return errors
