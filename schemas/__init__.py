"""The event contract: one Avro schema per event type, as `.avsc` files in this folder.

Each file holds one record in the `dev.devline` namespace, named after the file
(`plan_submitted.avsc` holds `PlanSubmitted`). Nested records are defined inline, so every
file parses on its own. `schemas.codec.Codec` turns records into bytes and back.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from devline.errors import SchemaError

SCHEMA_DIR = Path(__file__).resolve().parent
NAMESPACE = "dev.devline"

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(record_name: str) -> str:
    """File stem for: `PlanSubmitted` -> `plan_submitted`, `QAResult` -> `qa_result`."""
    return _WORD_BOUNDARY.sub("_", record_name).lower()


def schema_path(event_type: str, directory: Path = SCHEMA_DIR) -> Path:
    """Path of the `.avsc` file that defines `event_type`."""
    return directory / f"{snake_case(event_type)}.avsc"


def read_schema(path: Path) -> dict[str, Any]:
    """Read one `.avsc` file and check it is a namespaced record named after the file."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaError(f"{path.name}: cannot read schema: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SchemaError(f"{path.name}: top level must be a record")
    name = schema.get("name")
    if not isinstance(name, str) or "." in name:
        raise SchemaError(f"{path.name}: record needs a short name (namespace goes in 'namespace')")
    if schema.get("namespace") != NAMESPACE:
        raise SchemaError(f"{path.name}: namespace must be {NAMESPACE!r}")
    if snake_case(name) != path.stem:
        raise SchemaError(f"{path.name}: holds {name}, expected file {snake_case(name)}.avsc")
    return schema


def load_schemas(directory: Path = SCHEMA_DIR) -> dict[str, dict[str, Any]]:
    """Every schema in `directory`, keyed by short record name, in file-name order."""
    schemas: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.avsc")):
        schema = read_schema(path)
        schemas[schema["name"]] = schema
    if not schemas:
        raise SchemaError(f"no .avsc files in {directory}")
    return schemas


def load_schema(event_type: str, directory: Path = SCHEMA_DIR) -> dict[str, Any]:
    """The schema of one event type, by short record name."""
    path = schema_path(event_type, directory)
    if not path.is_file():
        raise SchemaError(f"unknown event type {event_type!r}: no {path.name}")
    return read_schema(path)


__all__ = [
    "NAMESPACE",
    "SCHEMA_DIR",
    "load_schema",
    "load_schemas",
    "read_schema",
    "schema_path",
    "snake_case",
]
