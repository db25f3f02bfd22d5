"""Validate JSON values against the submission schemas kept in eval/schemas/ (JSON Schema draft 2020-12).

The main environment has no `jsonschema` package, so this checks the subset of keywords our schemas
use. A schema keyword outside that subset is an error (a schema is never half-checked in silence).
"""
from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
_ANNOTATIONS = {"$schema", "$id", "title", "description", "examples"}
_KEYWORDS = {"type", "enum", "const", "pattern", "minLength", "maxLength", "minimum", "maximum", "properties",
             "required", "additionalProperties", "items", "minItems", "maxItems", "propertyNames"} | _ANNOTATIONS
_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None),
          "object": dict, "array": list}


class SchemaError(ValueError):
    """A value that does not match its schema (the message names the JSON path)."""


@cache
def load_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> None:
    """Raise SchemaError naming the first path where ``value`` breaks ``schema``."""
    unknown = set(schema) - _KEYWORDS
    if unknown:
        raise ValueError(f"schema at {path} uses unsupported keyword(s) {sorted(unknown)}")
    if "type" in schema:
        _check_type(value, schema["type"], path)
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{path}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        raise SchemaError(f"{path}: must be {schema['const']!r}")
    if isinstance(value, str):
        _check_string(value, schema, path)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"] or "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(f"{path}: {value} outside [{schema.get('minimum')}, {schema.get('maximum')}]")
    if isinstance(value, dict):
        _check_object(value, schema, path)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            raise SchemaError(f"{path}: {len(value)} items, outside the allowed count")
        for i, v in enumerate(value):
            if "items" in schema:
                validate(v, schema["items"], f"{path}[{i}]")


def _check_type(value: Any, types: str | list[str], path: str) -> None:
    names = [types] if isinstance(types, str) else types
    for name in names:
        py = _TYPES[name]
        if isinstance(value, bool) and name in ("integer", "number"):
            continue
        if name == "integer" and isinstance(value, float):
            continue
        if isinstance(value, py):
            return
    raise SchemaError(f"{path}: expected {' or '.join(names)}, got {type(value).__name__}")


def _check_string(value: str, schema: dict[str, Any], path: str) -> None:
    if len(value) < schema.get("minLength", 0):
        raise SchemaError(f"{path}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise SchemaError(f"{path}: longer than {schema['maxLength']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        raise SchemaError(f"{path}: {value!r} does not match {schema['pattern']!r}")


def _check_object(value: dict[str, Any], schema: dict[str, Any], path: str) -> None:
    for key in schema.get("required", []):
        if key not in value:
            raise SchemaError(f"{path}: missing required property {key!r}")
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, v in value.items():
        if "propertyNames" in schema:
            validate(key, schema["propertyNames"], f"{path} (property name {key!r})")
        if key in props:
            validate(v, props[key], f"{path}.{key}")
        elif extra is False:
            raise SchemaError(f"{path}: unexpected property {key!r}")
        elif isinstance(extra, dict):
            validate(v, extra, f"{path}.{key}")
