"""Validate objects against the committed CRD the way the API server does at `kubectl apply`.

The OpenAPI keywords are checked with jsonschema (`format` as the API server checks it), unknown fields
as `kubectl apply` (strict field validation) rejects them, and the CEL `x-kubernetes-validations` rules
with cel-python. Where Python reads a schema more loosely than the API server, the stricter reading is
checked too: patterns as Go's RE2 reads them, int-or-string values, integers beyond int64.
"""

import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy.evaluation import CELEvalError

CRD_PATH = Path(__file__).parents[2] / "crds" / "servicebuilds.servicebuild.dev.yaml"
INT64 = range(-(2**63), 2**63)

FORMATS = jsonschema.FormatChecker(formats=())
"""The string `format`s the CRD uses, checked as the API server checks them (kube-openapi's strfmt)."""
_DATE_TIME_RE = re.compile(
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


@FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    """RFC 3339 `date-time` as the API server's `IsDateTime` reads it: a date, `T`, a time and a zone (`Z` or
    `±hh:mm`), e.g. `2026-11-28T10:15:00Z`. The server also lets anything follow the date before the `T`;
    this does not."""
    return not isinstance(value, str) or _DATE_TIME_RE.fullmatch(value) is not None


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
            tuple(item.get(key) for key in keys)
            if list_type == "map" and isinstance(item, dict)
            else repr(item)
            for item in value
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


def schema_nodes(schema: dict[str, Any], value: Any) -> Iterator[tuple[dict[str, Any], Any]]:
    """Every value of `value` with the schema node that describes it."""
    for _, node, item in _described(schema, value, ""):
        yield node, item


def _described(schema: dict[str, Any], value: Any, path: str) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(field path as the API server names it, schema node, value) for every value."""
    yield path, schema, value
    if isinstance(value, dict):
        for key, item in value.items():
            child = schema.get("properties", {}).get(key) or schema.get("additionalProperties")
            if isinstance(child, dict):
                yield from _described(child, item, f"{path}.{key}".removeprefix("."))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _described(schema["items"], item, f"{path}[{index}]")


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@cache
def re2(pattern: str) -> re.Pattern[str]:
    """The pattern as the API server's Go regexp reads it: `$` ends the text, `\\w` and `\\d` are ASCII."""
    return re.compile(pattern.removesuffix("$") + r"\Z" if pattern.endswith("$") else pattern, re.ASCII)


def _stricter_than_python(schema: dict[str, Any], obj: Any) -> Iterator[str]:
    """What the API server rejects where jsonschema, reading the schema as Python would, accepts."""
    for path, node, value in _described(schema, obj, ""):
        if isinstance(value, str) and not _is_utf8(value):
            yield f"{path}: not valid UTF-8 (JSON on the wire cannot carry a lone surrogate)"
        if isinstance(value, int) and not isinstance(value, bool) and value not in INT64:
            yield f"{path}: {value!r} is beyond int64"
        not_int_or_string = isinstance(value, bool) or not isinstance(value, int | str)
        if node.get("x-kubernetes-int-or-string") and not_int_or_string:
            yield f"{path}: {value!r} is neither an integer nor a string"
        if "pattern" in node and isinstance(value, str) and not re2(node["pattern"]).search(value):
            yield f"{path}: {value!r} does not match {node['pattern']} (RE2)"


def crd_errors(obj: dict[str, Any], schema: dict[str, Any] | None = None) -> list[str]:
    """Why the API server would reject this object (a ServiceBuild unless another CRD's `schema` is given);
    empty when it would accept it."""
    schema = object_schema() if schema is None else schema
    stricter = list(_stricter_than_python(schema, obj))
    if stricter:
        return stricter
    validator = jsonschema.Draft4Validator(schema, format_checker=FORMATS)
    errors = [f"{_path(error.absolute_path)}: {error.message}" for error in validator.iter_errors(obj)]
    errors += _unknown_fields(schema, obj, "")
    errors += _duplicates(schema, obj, "")
    if not errors:
        try:
            errors += _cel_failures(schema, obj, "")
        except (ValueError, CELEvalError) as exc:
            # A rule that fails to evaluate rejects the object (cel-python raises on int64 overflows).
            errors.append(f"a validation rule failed to evaluate: {exc!r}")
    return errors
