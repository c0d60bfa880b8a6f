"""Bounds check of Avro binary, run before fastavro decodes bytes from the wire.

fastavro trusts the lengths and block counts it reads: an array of zero-byte items with a
block count of 2**62 loops (and allocates) for ever, an over-long varint silently wraps, a
boolean byte of 7 reads as True. `compile_guard` turns a writer schema into a walk over the
bytes that decodes nothing and checks, in one linear pass, that they are exactly one
well-formed datum:

- every varint is at most 5 (int) or 10 (long) bytes and in range;
- a string/bytes length is >= 0 and fits in the bytes that are left;
- an array/map block count times the smallest encoded size of an item must fit in the bytes
  left, so an impossible count is rejected before any item is read; items that can take
  zero bytes (`null`, empty records) draw instead on a budget of len(data) per message, so
  decoding them can never loop or allocate more than the message is long; a negative
  count's block size must fit as well and match what the items take;
- union branch and enum indexes are in range, booleans are 0 or 1;
- the datum ends exactly at the end of the message (no trailing bytes).

Work is O(len(data)): each item or block consumes a byte or a unit of the budget.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

Walk = Callable[[bytes, int], int]
"""Check one datum starting at `pos`; return the position just after it."""


class Malformed(ValueError):
    """Bytes that are not one well-formed datum of the schema."""


_PRIMITIVE_MIN_SIZE = {
    "null": 0,
    "boolean": 1,
    "int": 1,
    "long": 1,
    "float": 4,
    "double": 8,
    "bytes": 1,
    "string": 1,
}


def _varint(buf: bytes, pos: int, max_len: int, bits: int) -> tuple[int, int]:
    """Read a zig-zag varint of at most `max_len` bytes whose value fits in `bits` bits."""
    byte = buf[pos]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    start = pos
    value = byte & 0x7F
    shift = 7
    pos += 1
    while True:
        if pos - start >= max_len:
            raise Malformed(f"varint at byte {start} is longer than {max_len} bytes")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    if value >> bits:
        raise Malformed(f"varint at byte {start} overflows {bits} bits")
    return (value >> 1) ^ -(value & 1), pos


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    byte = buf[pos]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    return _varint(buf, pos, 10, 64)


def _null(buf: bytes, pos: int) -> int:
    return pos


def _boolean(buf: bytes, pos: int) -> int:
    if buf[pos] > 1:
        raise Malformed(f"boolean at byte {pos} is {buf[pos]}, not 0 or 1")
    return pos + 1


def _int(buf: bytes, pos: int) -> int:
    return _varint(buf, pos, 5, 32)[1]


def _long_walk(buf: bytes, pos: int) -> int:
    return _varint(buf, pos, 10, 64)[1]


def _sized(size: int, what: str) -> Walk:
    def walk(buf: bytes, pos: int) -> int:
        if pos + size > len(buf):
            raise Malformed(f"{what} at byte {pos} needs {size} bytes, {len(buf) - pos} left")
        return pos + size

    return walk


def _length_prefixed(buf: bytes, pos: int) -> int:
    size, pos = _long(buf, pos)
    left = len(buf) - pos
    if size < 0 or size > left:
        raise Malformed(f"length {size} at byte {pos} does not fit in the {left} bytes left")
    return pos + size


def _blocks(item: Walk, item_min: int, what: str, budget: threading.local) -> Walk:
    """Walk the blocks of an array or map whose entries are checked by `item`."""
    charge = max(1, item_min)

    def walk(buf: bytes, pos: int) -> int:
        while True:
            count, pos = _long(buf, pos)
            if count == 0:
                return pos
            end = -1
            if count < 0:
                count = -count
                size, pos = _long(buf, pos)
                if size < 0 or size > len(buf) - pos:
                    raise Malformed(f"{what} block size {size} at byte {pos} does not fit")
                end = pos + size
            if item_min == 0:
                budget.items -= count
                if budget.items < 0:
                    raise Malformed(
                        f"{what} of {count} zero-byte items at byte {pos} exceeds what a "
                        f"{len(buf)}-byte message may hold"
                    )
            elif count * charge > len(buf) - pos:
                raise Malformed(
                    f"{what} block of {count} items at byte {pos} cannot fit in the "
                    f"{len(buf) - pos} bytes left"
                )
            if item is _length_prefixed:  # array<string>: inline the common case
                for _ in range(count):
                    byte = buf[pos]
                    if byte < 0x80:
                        if byte & 1:
                            raise Malformed(f"negative string length at byte {pos}")
                        pos += 1 + (byte >> 1)
                        if pos > len(buf):
                            raise Malformed(f"string ending at byte {pos} overruns the data")
                    else:
                        pos = _length_prefixed(buf, pos)
            else:
                for _ in range(count):
                    pos = item(buf, pos)
            if end >= 0 and pos != end:
                raise Malformed(f"{what} block ends at byte {pos}, its size said {end}")

    return walk


def _union(branches: list[Walk]) -> Walk:
    count = len(branches)

    def walk(buf: bytes, pos: int) -> int:
        index, after = _long(buf, pos)
        if not 0 <= index < count:
            raise Malformed(f"union index {index} at byte {pos} is not in 0..{count - 1}")
        return branches[index](buf, after)

    if count == 2 and branches[0] is _null:
        walk.optional = branches[1]  # type: ignore[attr-defined]  # lets records inline it
    return walk


def _enum(symbols: int) -> Walk:
    def walk(buf: bytes, pos: int) -> int:
        index, after = _long(buf, pos)
        if not 0 <= index < symbols:
            raise Malformed(f"enum index {index} at byte {pos} is not in 0..{symbols - 1}")
        return after

    return walk


def _record(fields: list[Walk]) -> Walk:
    """Walk fields in order; the common field types are inlined (this is the hot loop)."""
    steps = tuple(_step(field) for field in fields if field is not _null)

    def walk(buf: bytes, pos: int) -> int:
        for op, call in steps:
            if op <= _OPT_STRING:
                if op == _OPT_STRING:
                    byte = buf[pos]
                    if byte == 0 or byte == 2:
                        pos += 1
                    else:
                        byte, pos = _optional_index(buf, pos)
                    if byte == 0:
                        continue
                byte = buf[pos]
                if byte < 0x80:
                    size = (byte >> 1) ^ -(byte & 1)
                    pos += 1
                else:
                    size, pos = _long(buf, pos)
                if size < 0 or size > len(buf) - pos:
                    left = len(buf) - pos
                    raise Malformed(
                        f"length {size} at byte {pos} does not fit in the {left} bytes left"
                    )
                pos += size
            elif op == _LONG:
                if buf[pos] < 0x80:
                    pos += 1
                else:
                    pos = _varint(buf, pos, 10, 64)[1]
            elif op == _OPTIONAL:
                byte = buf[pos]
                if byte == 0 or byte == 2:
                    pos += 1
                else:
                    byte, pos = _optional_index(buf, pos)
                if byte:
                    pos = call(buf, pos)
            elif op == _DOUBLE:
                pos += 8
                if pos > len(buf):
                    raise Malformed(
                        f"double at byte {pos - 8} needs 8 bytes, {len(buf) - pos + 8} left"
                    )
            else:
                pos = call(buf, pos)
        return pos

    return walk


_STRING, _OPT_STRING, _LONG, _OPTIONAL, _DOUBLE, _CALL = range(6)


def _step(field: Walk) -> tuple[int, Walk]:
    if field is _length_prefixed:
        return _STRING, field
    if field is _optional_string:
        return _OPT_STRING, field
    if field is _long_walk:
        return _LONG, field
    if field is _double:
        return _DOUBLE, field
    optional = getattr(field, "optional", None)
    if optional is not None:
        return _OPTIONAL, optional
    return _CALL, field


_double = _sized(8, "double")


def _optional_index(buf: bytes, pos: int) -> tuple[int, int]:
    """Read the branch of a ["null", T] union the slow way; return (0 or 2, position after)."""
    index, after = _long(buf, pos)
    if index not in (0, 1):
        raise Malformed(f"union index {index} at byte {pos} is not in 0..1")
    return index * 2, after


def _optional_string(buf: bytes, pos: int) -> int:
    index, pos = _optional_index(buf, pos)
    return _length_prefixed(buf, pos) if index else pos


_PRIMITIVE_WALKS: dict[str, Walk] = {
    "null": _null,
    "boolean": _boolean,
    "int": _int,
    "long": _long_walk,
    "float": _sized(4, "float"),
    "double": _double,
    "bytes": _length_prefixed,
    "string": _length_prefixed,
}


class _Compiler:
    """Builds walks for one parsed schema; named types are compiled once and shared."""

    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named_schemas = named
        self.walks: dict[str, Walk] = {}
        self.sizes: dict[str, int] = {}
        self.budget = threading.local()  # zero-byte items left in the message being checked

    def compile(self, schema: Any) -> tuple[Walk, int]:
        """Return (walk, minimum encoded size) for `schema`."""
        if isinstance(schema, str):
            if schema in _PRIMITIVE_WALKS:
                return _PRIMITIVE_WALKS[schema], _PRIMITIVE_MIN_SIZE[schema]
            return self._named(schema)
        if isinstance(schema, list):
            compiled = [self.compile(branch) for branch in schema]
            if [w for w, _ in compiled] == [_null, _length_prefixed]:
                return _optional_string, 1
            return _union([w for w, _ in compiled]), 1 + min((s for _, s in compiled), default=0)
        kind = schema["type"]
        if kind in _PRIMITIVE_WALKS or isinstance(kind, (dict, list)):
            return self.compile(kind)
        if kind == "array":
            item, size = self.compile(schema["items"])
            return _blocks(item, size, "array", self.budget), 1
        if kind == "map":
            value, size = self.compile(schema["values"])
            return _blocks(_record([_length_prefixed, value]), 1 + size, "map", self.budget), 1
        if kind == "fixed":
            walk, size = _sized(int(schema["size"]), "fixed"), int(schema["size"])
        elif kind == "enum":
            walk, size = _enum(len(schema["symbols"])), 1
        elif kind == "record" or kind == "error":
            return self._record(schema)
        else:
            raise Malformed(f"cannot check Avro type {kind!r}")
        self.walks[schema["name"]], self.sizes[schema["name"]] = walk, size
        return walk, size

    def _named(self, name: str) -> tuple[Walk, int]:
        if name not in self.walks:
            if name not in self.named_schemas:
                raise Malformed(f"schema refers to unknown type {name!r}")
            return self.compile(self.named_schemas[name])
        return self.walks[name], self.sizes.get(name, 0)

    def _record(self, schema: Mapping[str, Any]) -> tuple[Walk, int]:
        name = schema["name"]
        cell: list[Walk] = []
        # A recursive record reaches itself through this forward reference (size 0 is a
        # safe lower bound while its own size is unknown).
        self.walks[name] = lambda buf, pos: cell[0](buf, pos)
        compiled = [self.compile(field["type"]) for field in schema["fields"]]
        walk = _record([w for w, _ in compiled])
        cell.append(walk)
        self.walks[name], self.sizes[name] = walk, sum(s for _, s in compiled)
        return walk, self.sizes[name]


def compile_guard(parsed_schema: Any) -> Callable[[bytes, int], None]:
    """A check that `data[offset:]` is exactly one datum of `parsed_schema` (fastavro-parsed).

    The check raises `Malformed` with the byte position and the reason.
    """
    named = parsed_schema.get("__named_schemas", {}) if isinstance(parsed_schema, dict) else {}
    compiler = _Compiler(named)
    walk, _ = compiler.compile(parsed_schema)
    budget = compiler.budget

    def guard(data: bytes, offset: int) -> None:
        budget.items = len(data)
        try:
            end = walk(data, offset)
        except IndexError:
            raise Malformed(f"truncated: data ends at byte {len(data)} inside a value") from None
        except RecursionError:
            raise Malformed("nesting too deep") from None
        if end != len(data):
            raise Malformed(f"{len(data) - end} trailing bytes after the datum (ends at {end})")

    return guard
