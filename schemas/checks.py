"""Check a Python record against a schema before encoding, naming the bad field.

fastavro's writer reports a wrong type without saying where, quietly drops unknown keys,
and accepts `True` for an int. `compile_checker` turns a parsed schema into a check that
rejects all of these with the dotted path of the field (`files[3].simulate.duration_s`).

Timestamps are plain int milliseconds: logical types are checked as their underlying type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from devline.errors import SchemaError

Check = Callable[[Any], None]

_FLOAT_MAX = 3.4028234663852886e38


class RecordError(SchemaError):
    """A record that does not match its schema. `field` is the dotted path of the bad value."""

    def __init__(self, event_type: str, field: str, problem: str) -> None:
        where = f"{event_type}.{field}" if field else event_type
        super().__init__(f"{where}: {problem}")
        self.event_type = event_type
        self.field = field
        self.problem = problem


class _Invalid(Exception):
    """Raised inside a check; the path grows (innermost first) as it propagates out."""

    def __init__(self, problem: str, path: list[str] | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path = path or []


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _null(value: Any) -> None:
    if value is not None:
        raise _Invalid(f"expected null, got {_show(value)}")


def _boolean(value: Any) -> None:
    if not isinstance(value, bool):
        raise _Invalid(f"expected boolean, got {_show(value)}")


def _ranged(name: str, bits: int) -> Check:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def check(value: Any) -> None:
        if not _is_int(value):
            raise _Invalid(f"expected {name}, got {_show(value)}")
        if not low <= value <= high:
            raise _Invalid(f"{value} is out of range for {name}")

    return check


def _double(value: Any) -> None:
    if not (isinstance(value, float) or _is_int(value)):
        raise _Invalid(f"expected double, got {_show(value)}")


def _float(value: Any) -> None:
    _double(value)
    if abs(value) > _FLOAT_MAX and abs(value) != float("inf"):
        raise _Invalid(f"{value} is out of range for float")


def _string(value: Any) -> None:
    if not isinstance(value, str):
        raise _Invalid(f"expected string, got {_show(value)}")


def _bytes(value: Any) -> None:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise _Invalid(f"expected bytes, got {_show(value)}")


_PRIMITIVES: dict[str, Check] = {
    "null": _null,
    "boolean": _boolean,
    "int": _ranged("int", 32),
    "long": _ranged("long", 64),
    "float": _float,
    "double": _double,
    "bytes": _bytes,
    "string": _string,
}


def _type_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema.rpartition(".")[2]
    if isinstance(schema, list):
        return " or ".join(_type_name(branch) for branch in schema)
    return str(schema.get("name", schema["type"])).rpartition(".")[2]


def _array(item: Check) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(f"expected array (list), got {_show(value)}")
        for index, element in enumerate(value):
            try:
                item(element)
            except _Invalid as exc:
                exc.path.append(f"[{index}]")
                raise

    return check


def _map(values: Check) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, Mapping):
            raise _Invalid(f"expected map (dict), got {_show(value)}")
        for key, element in value.items():
            if not isinstance(key, str):
                raise _Invalid(f"map keys must be strings, got {_show(key)}")
            try:
                values(element)
            except _Invalid as exc:
                exc.path.append(f"[{key!r}]")
                raise

    return check


def _union(branches: list[Check], names: str) -> Check:
    if len(branches) == 2 and branches[0] is _null:
        other = branches[1]

        def optional(value: Any) -> None:
            if value is not None:
                other(value)

        return optional

    def check(value: Any) -> None:
        for branch in branches:
            try:
                branch(value)
                return
            except _Invalid:
                continue
        raise _Invalid(f"expected {names}, got {_show(value)}")

    return check


def _record(name: str, fields: list[tuple[str, Check, bool]]) -> Check:
    known = frozenset(field for field, _, _ in fields)

    def check(value: Any) -> None:
        if not isinstance(value, Mapping):
            raise _Invalid(f"expected record {name} (dict), got {_show(value)}")
        present = 0
        for field, field_check, has_default in fields:
            if field in value:
                present += 1
                try:
                    field_check(value[field])
                except _Invalid as exc:
                    exc.path.append(field)
                    raise
            elif not has_default:
                raise _Invalid("required field is missing", [field])
        if present != len(value):
            unknown = sorted(str(key) for key in value if key not in known)
            raise _Invalid(f"unknown field (not in {name})", [unknown[0]])

    return check


class _Compiler:
    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named_schemas = named
        self.checks: dict[str, Check] = {}

    def compile(self, schema: Any) -> Check:
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _PRIMITIVES[schema]
            if schema not in self.checks:
                return self.compile(self.named_schemas[schema])
            return self.checks[schema]
        if isinstance(schema, list):
            return _union([self.compile(branch) for branch in schema], _type_name(schema))
        kind = schema["type"]
        if kind in _PRIMITIVES or isinstance(kind, (dict, list)):
            return self.compile(kind)
        if kind == "array":
            return _array(self.compile(schema["items"]))
        if kind == "map":
            return _map(self.compile(schema["values"]))
        if kind in ("record", "error"):
            return self._record(schema)
        if kind == "enum":
            check = self._enum(schema)
        elif kind == "fixed":
            check = self._fixed(schema)
        else:
            raise SchemaError(f"cannot check Avro type {kind!r}")
        self.checks[schema["name"]] = check
        return check

    def _record(self, schema: Mapping[str, Any]) -> Check:
        name = schema["name"]
        cell: list[Check] = []
        self.checks[name] = lambda value: cell[0](value)
        fields = [
            (field["name"], self.compile(field["type"]), "default" in field)
            for field in schema["fields"]
        ]
        check = _record(_type_name(name), fields)
        cell.append(check)
        self.checks[name] = check
        return check

    @staticmethod
    def _enum(schema: Mapping[str, Any]) -> Check:
        symbols = frozenset(schema["symbols"])

        def check(value: Any) -> None:
            if not isinstance(value, str) or value not in symbols:
                raise _Invalid(f"expected one of {sorted(symbols)}, got {_show(value)}")

        return check

    @staticmethod
    def _fixed(schema: Mapping[str, Any]) -> Check:
        size = int(schema["size"])

        def check(value: Any) -> None:
            _bytes(value)
            if len(value) != size:
                raise _Invalid(f"expected {size} bytes, got {len(value)}")

        return check


def _dotted(path: list[str]) -> str:
    out = ""
    for part in reversed(path):
        out += part if part.startswith("[") or not out else "." + part
    return out


def compile_checker(parsed_schema: Any) -> Callable[[Any], None]:
    """A check of a record against `parsed_schema` that raises `RecordError` naming the field."""
    event_type = _type_name(parsed_schema)
    named = parsed_schema.get("__named_schemas", {}) if isinstance(parsed_schema, dict) else {}
    check = _Compiler(named).compile(parsed_schema)

    def checker(record: Any) -> None:
        try:
            check(record)
        except _Invalid as exc:
            raise RecordError(event_type, _dotted(exc.path), exc.problem) from None

    return checker
