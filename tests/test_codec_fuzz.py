"""Property tests: valid records round-trip; arbitrary bytes never escape as another error."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from samples import EVENT_TYPES, fill_defaults, sample_event

from devline.errors import DecodeError
from schemas.codec import SINGLE_OBJECT_MAGIC, Codec

PLAIN = Codec()
CONFLUENT = Codec(
    registry_client=SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
)
SAMPLES = {t: CONFLUENT.encode(t, sample_event(t)) for t in EVENT_TYPES}  # registers every id
SCHEMA_IDS = sorted({int.from_bytes(data[1:5], "big") for data in SAMPLES.values()})
FUZZ = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])

_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "double": st.floats(allow_nan=False) | st.integers(-(2**53), 2**53),
    "float": st.floats(allow_nan=False, width=32),
    "string": st.text(max_size=40),
    "bytes": st.binary(max_size=40),
}


def values(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Valid Python values for a fastavro-parsed `schema`; optional fields may be left out."""
    if isinstance(schema, str):
        return _PRIMITIVES[schema] if schema in _PRIMITIVES else values(named[schema], named)
    if isinstance(schema, list):
        return st.one_of([values(branch, named) for branch in schema])
    kind = schema["type"]
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    if kind == "array":
        return st.lists(values(schema["items"], named), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=10), values(schema["values"], named), max_size=4)
    required = {f["name"]: values(f["type"], named) for f in schema["fields"] if "default" not in f}
    optional = {f["name"]: values(f["type"], named) for f in schema["fields"] if "default" in f}
    return st.fixed_dictionaries(required, optional=optional)


def records() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    def for_type(event_type: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
        schema = PLAIN.schema(event_type)
        return st.tuples(st.just(event_type), values(schema, schema["__named_schemas"]))

    return st.sampled_from(EVENT_TYPES).flatmap(for_type)


def _decodes_or_rejects(codec: Codec, data: bytes) -> None:
    try:
        event_type, record = codec.decode(data)
    except DecodeError:
        event("rejected")
        return
    event("decoded")
    codec.validate(event_type, record)  # whatever decodes is a valid record of its type


@FUZZ
@given(records())
def test_valid_records_round_trip_in_both_formats(case: tuple[str, dict[str, Any]]) -> None:
    event_type, record = case
    expected = fill_defaults(PLAIN.schema(event_type), record)
    for codec in (PLAIN, CONFLUENT):
        assert codec.decode(codec.encode(event_type, record)) == (event_type, expected)


@pytest.mark.timeout(120)
@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    _decodes_or_rejects(CONFLUENT, data)
    _decodes_or_rejects(PLAIN, data)


@pytest.mark.timeout(120)
@FUZZ
@given(st.sampled_from(EVENT_TYPES), st.binary(max_size=512))
def test_garbage_behind_a_valid_fingerprint(event_type: str, body: bytes) -> None:
    _decodes_or_rejects(PLAIN, SINGLE_OBJECT_MAGIC + PLAIN.fingerprint(event_type) + body)


@pytest.mark.timeout(120)
@FUZZ
@given(st.sampled_from(SCHEMA_IDS), st.binary(max_size=512))
def test_garbage_behind_a_valid_schema_id(schema_id: int, body: bytes) -> None:
    _decodes_or_rejects(CONFLUENT, b"\x00" + schema_id.to_bytes(4, "big") + body)


@pytest.mark.timeout(120)
@FUZZ
@given(
    st.sampled_from(EVENT_TYPES),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 10_000),
    st.binary(max_size=16),
)
def test_mutated_valid_messages(
    event_type: str, flips: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    for codec, data in (
        (PLAIN, PLAIN.encode(event_type, sample_event(event_type))),
        (CONFLUENT, SAMPLES[event_type]),
    ):
        mutated = bytearray(data)
        for index, value in flips:
            mutated[index % len(mutated)] = value
        _decodes_or_rejects(codec, bytes(mutated))
        _decodes_or_rejects(codec, bytes(mutated[: cut % (len(mutated) + 1)]) + tail)
