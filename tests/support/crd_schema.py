"""Validate objects against the committed CRD the way the API server does at `kubectl apply`.

The OpenAPI keywords are checked with jsonschema, unknown fields as `kubectl apply` (strict field
validation) rejects them, and the CEL `x-kubernetes-validations` rules with cel-python.
"""

from collections.abc import Iterator
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
                    yield f"{path}.{key}: unknown field"
                else:
                    yield from _unknown_fields(properties[key], item, f"{path}.{key}")
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


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Why the API server would reject this ServiceBuild; empty when it would accept it."""
    schema = object_schema()
    validator = jsonschema.Draft4Validator(schema)
    errors = [
        f"{'.'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(obj)
    ]
    errors += _unknown_fields(schema, obj, "")
    if not errors:
        errors += _cel_failures(schema, obj, "")
    return errors
