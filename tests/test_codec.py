"""Codec behaviour: both wire formats, validation, and bounds on hostile bytes."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from samples import (
    EVENT_TYPES,
    avro_str,
    fill_defaults,
    mock_registry,
    plan_submitted,
    sample_event,
    zz,
)

from devline.errors import DecodeError, SchemaError
from schemas.checks import RecordError
from schemas.codec import SINGLE_OBJECT_MAGIC, Codec
from schemas.guard import Malformed, compile_guard

TIMESTAMP_FIELDS = {
    "PlanSubmitted": "submitted_at",
    "MetricPoint": "at",
    "WorkItem": "dispatched_at",
}


@pytest.fixture(scope="module")
def plain() -> Codec:
    return Codec()


@pytest.fixture
def registry_codec() -> Codec:
    return Codec(registry_client=mock_registry())


# -- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("event_type", EVENT_TYPES)
@pytest.mark.parametrize("mode", ["single-object", "confluent"])
def test_every_event_type_round_trips(event_type: str, mode: str, plain: Codec) -> None:
    codec = plain if mode == "single-object" else Codec(registry_client=mock_registry())
    record = sample_event(event_type)
    data = codec.encode(event_type, record)
    assert data[:2] == SINGLE_OBJECT_MAGIC if mode == "single-object" else data[0] == 0
    assert codec.decode(data) == (event_type, fill_defaults(codec.schema(event_type), record))


def test_single_object_header_is_magic_and_little_endian_fingerprint(plain: Codec) -> None:
    data = plain.encode("MetricPoint", sample_event("MetricPoint"))
    assert data[:10] == b"\xc3\x01" + plain.fingerprint("MetricPoint")
    body = fastavro.schemaless_reader(io.BytesIO(data[10:]), plain.schema("MetricPoint"))
    assert isinstance(body, dict) and body["name"] == "backlog"


def test_confluent_bytes_are_registered_under_the_record_name(registry_codec: Codec) -> None:
    data = registry_codec.encode("PlanSubmitted", plan_submitted())
    registry = registry_codec.registry
    assert registry is not None
    latest = registry.get_latest_version("dev.devline.PlanSubmitted")
    assert int.from_bytes(data[1:5], "big") == latest.schema_id
    assert json.loads(latest.schema.schema_str or "")["fields"][0]["doc"]  # docs travel along


def test_reader_accepts_both_formats(plain: Codec, registry_codec: Codec) -> None:
    record = sample_event("TaskReady")
    single = plain.encode("TaskReady", record)
    confluent = registry_codec.encode("TaskReady", record)
    assert registry_codec.decode(single) == ("TaskReady", record)
    assert registry_codec.decode(confluent) == ("TaskReady", record)
    with pytest.raises(DecodeError, match="no schema registry is configured"):
        plain.decode(confluent)


def test_timestamps_stay_int_milliseconds(plain: Codec) -> None:
    for event_type, field in TIMESTAMP_FIELDS.items():
        _, record = plain.decode(plain.encode(event_type, sample_event(event_type)))
        assert type(record[field]) is int
        bad = {**sample_event(event_type), field: datetime.now(UTC)}
        with pytest.raises(SchemaError, match=field):
            plain.encode(event_type, bad)


def test_optional_fields_may_be_left_out(plain: Codec) -> None:
    record = {"source": "s", "name": "n", "value": 1, "at": 5}
    assert plain.decode(plain.encode("MetricPoint", record))[1] == {**record, "labels": {}}


def test_decode_accepts_bytearray_and_memoryview(plain: Codec) -> None:
    data = plain.encode("MetricPoint", sample_event("MetricPoint"))
    assert plain.decode(bytearray(data)) == plain.decode(memoryview(data)) == plain.decode(data)


def test_event_types_are_the_short_record_names(plain: Codec) -> None:
    assert sorted(plain.event_types) == EVENT_TYPES


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "field", "problem"),
    [
        (lambda r: r["files"][1].update(path=5), "files[1].path", "expected string"),
        (
            lambda r: r["files"][0]["simulate"].update(fail_first=True),
            "files[0].simulate.fail_first",
            "expected int",
        ),
        (
            lambda r: r["files"][0]["simulate"].update(fail_first=2**31),
            "files[0].simulate.fail_first",
            "out of range",
        ),
        (lambda r: r["files"][0].update(cost="cheap"), "files[0].cost", "expected double"),
        (lambda r: r["options"].update(x=1), "options['x']", "expected string"),
        (lambda r: r.update(submited_at=1), "submited_at", "unknown field"),
        (lambda r: r.pop("plan_id"), "plan_id", "required field is missing"),
        (lambda r: r.update(files={"a": 1}), "files", "expected array"),
        (lambda r: r.update(submitted_at=None), "submitted_at", "expected long"),
    ],
)
def test_invalid_records_name_the_field(
    mutate: Any, field: str, problem: str, plain: Codec
) -> None:
    record = plan_submitted()
    mutate(record)
    for call in (
        lambda: plain.validate("PlanSubmitted", record),
        lambda: plain.encode("PlanSubmitted", record),
    ):
        with pytest.raises(RecordError) as caught:
            call()
        assert caught.value.field == field
        assert problem in str(caught.value) and f"PlanSubmitted.{field}" in str(caught.value)
        assert isinstance(caught.value, SchemaError)


def test_unknown_event_type_is_a_schema_error(plain: Codec) -> None:
    with pytest.raises(SchemaError, match="unknown event type"):
        plain.encode("NoSuchEvent", {})


def test_size_limit_applies_to_encode_and_decode() -> None:
    small = Codec(max_bytes=1024)
    big = sample_event("TaskCompleted") | {"content": "x" * 2000}
    with pytest.raises(SchemaError, match="over the 1024-byte limit"):
        small.encode("TaskCompleted", big)
    data = Codec().encode("TaskCompleted", big)
    with pytest.raises(DecodeError, match="over the 1024-byte limit"):
        small.decode(data)
    # Measuring is not sending: the unbounded form gives the same bytes, still validated.
    assert small.encode_unbounded("TaskCompleted", big) == data
    with pytest.raises(SchemaError):
        small.encode_unbounded("TaskCompleted", big | {"size": "not a number"})


# -- hostile bytes ----------------------------------------------------------------------


def _header(codec: Codec, event_type: str) -> bytes:
    return SINGLE_OBJECT_MAGIC + codec.fingerprint(event_type)


def _heartbeat(running: bytes) -> bytes:
    """WorkerHeartbeat body up to `running`, with `running` spliced in raw."""
    return avro_str("w") + avro_str("h") + zz(1) + avro_str("idle") + zz(1) + running


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    ("event_type", "body", "reason"),
    [
        ("MetricPoint", zz(2**62) + b"abc", "does not fit"),
        ("MetricPoint", zz(-3) + b"abc", "does not fit"),
        ("MetricPoint", zz(2**31) + b"\x00" * 64, "does not fit"),
        ("WorkerHeartbeat", _heartbeat(zz(2**60) + b"\x00" * 32), "cannot fit"),
        ("WorkerHeartbeat", _heartbeat(zz(-(2**40)) + zz(2**62) + b"\x00" * 8), "does not fit"),
        (
            "WorkerHeartbeat",
            _heartbeat(zz(-2) + zz(1) + zz(0) + zz(0) + zz(0) + zz(0)),
            "size said",
        ),
        ("WorkerHeartbeat", avro_str("w") + avro_str("h") + b"\xff" * 6 + b"\x01", "longer than 5"),
        (
            "MetricPoint",
            avro_str("s") + avro_str("n") + b"\x00" * 8 + zz(2**61) + b"\x02a\x02b",
            "cannot fit",
        ),
        (
            "MetricPoint",
            avro_str("s") + avro_str("n") + b"\x00" * 8 + zz(0) + b"\xff" * 11,
            "longer than 10",
        ),
        (
            "MetricPoint",
            avro_str("s") + avro_str("n") + b"\x00" * 8 + zz(0) + b"\xff" * 9 + b"\x7f",
            "overflows",
        ),
        ("QAResult", avro_str("e") * 4 + b"\x07", "not 0 or 1"),
        ("PlanRejected", avro_str("p") + avro_str("r") + zz(5), "union index 5"),
        ("MetricPoint", avro_str("s") + avro_str("n") + b"\x00" * 3, "needs 8 bytes"),
        (
            "MetricPoint",
            avro_str("s") + avro_str("n") + b"\x00" * 8 + zz(0) + zz(1) + b"junk",
            "trailing",
        ),
    ],
)
def test_crafted_lengths_and_counts_are_rejected_fast(
    event_type: str, body: bytes, reason: str, plain: Codec
) -> None:
    with pytest.raises(DecodeError, match=reason):
        plain.decode(_header(plain, event_type) + body)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("mode", ["single-object", "confluent"])
def test_every_truncation_and_extension_is_a_decode_error(mode: str, plain: Codec) -> None:
    codec = plain if mode == "single-object" else Codec(registry_client=mock_registry())
    data = codec.encode("PlanSubmitted", plan_submitted(4))
    for end in range(len(data)):
        with pytest.raises(DecodeError):
            codec.decode(data[:end])
    for extra in (b"\x00", b"\x02a", b"\xff" * 16):
        with pytest.raises(DecodeError, match="trailing"):
            codec.decode(data + extra)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "unknown wire format"),
        (b'{"plan_id": 1}', "unknown wire format"),
        (b"\xc3\x01\x01", "truncated single-object header"),
        (b"\xc3\x01" + b"\x00" * 8 + b"\x00", "unknown schema fingerprint"),
        (b"\x00\x00\x00", "truncated Confluent header"),
    ],
)
def test_foreign_bytes_are_decode_errors(data: bytes, reason: str, registry_codec: Codec) -> None:
    with pytest.raises(DecodeError, match=reason):
        registry_codec.decode(data)


def test_non_bytes_input_is_a_decode_error(plain: Codec) -> None:
    with pytest.raises(DecodeError, match="expected bytes"):
        plain.decode("text")  # type: ignore[arg-type]


def test_invalid_utf8_is_a_decode_error(plain: Codec) -> None:
    body = zz(2) + b"\xff\xfe" + avro_str("n") + b"\x00" * 8 + zz(0) + zz(1)
    with pytest.raises(DecodeError, match="cannot decode MetricPoint"):
        plain.decode(_header(plain, "MetricPoint") + body)


@pytest.mark.timeout(5)
def test_zero_byte_items_draw_on_a_per_message_budget() -> None:
    schema = {"type": "array", "items": {"type": "array", "items": "null"}}
    guard = compile_guard(fastavro.parse_schema(schema))
    guard(zz(1) + zz(3) + zz(0) + zz(0), 0)  # [[None] * 3] is 4 bytes: fine
    with pytest.raises(Malformed, match="zero-byte items"):
        guard(zz(1) + zz(2**62) + zz(0) + zz(0), 0)
    many = zz(40) + (zz(3) + zz(0)) * 40 + zz(0)  # 120 nulls in 82 bytes: over budget
    with pytest.raises(Malformed, match="zero-byte items"):
        guard(many, 0)


@pytest.mark.timeout(5)
def test_recursive_writer_schemas_are_walked_and_depth_is_bounded() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}],
    }
    parsed = fastavro.parse_schema(node)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, {"v": 1, "next": {"v": 2, "next": None}})
    guard = compile_guard(parsed)
    guard(out.getvalue(), 0)
    with pytest.raises(Malformed, match="nesting too deep"):
        guard((zz(0) + zz(1)) * 100_000 + zz(0) + zz(0), 0)


def test_records_written_with_an_earlier_schema_version_still_decode(plain: Codec) -> None:
    """Single-object records carry their writer's fingerprint: old versions (kept in
    schemas/history) are read and resolved to today's schema, new fields defaulted."""
    from schemas import SCHEMA_DIR
    from schemas.codec import plain_schema

    old = json.loads((SCHEMA_DIR / "history" / "task_completed.v1.avsc").read_text())
    parsed = fastavro.parse_schema(plain_schema(old))
    record = sample_event("TaskCompleted")
    record.pop("project", None)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    fp = bytes.fromhex(fastavro.schema.fingerprint(
        fastavro.schema.to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    assert fp != plain.fingerprint("TaskCompleted")
    event_type, value = plain.decode(b"\xc3\x01" + fp + out.getvalue())
    assert event_type == "TaskCompleted" and value["project"] is None
    assert value["content_hash"] == record["content_hash"]
