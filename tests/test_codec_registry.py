"""Codec and schema registry: ids, caching, evolution, hostile writer schemas, outages."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import (
    MockSchemaRegistryClient,
)
from samples import mock_registry, plan_submitted, sample_event, zz

from devline.errors import DecodeError
from devline.settings import Settings
from schemas import load_schema
from schemas.codec import Codec, RegistryUnavailable


class CountingRegistry(MockSchemaRegistryClient):
    """The in-memory registry, counting round trips (a fake with behaviour)."""

    def __init__(self, fail_with: int | None = None) -> None:
        super().__init__({"url": f"mock://{uuid.uuid4().hex}"})
        self.registers = 0
        self.fetches = 0
        self.fail_with = fail_with

    def register_schema(
        self, subject_name: str, schema: Schema, normalize_schemas: bool = False
    ) -> int:
        self.registers += 1
        return super().register_schema(subject_name, schema, normalize_schemas)

    def get_schema(self, schema_id: int, *args: Any, **kwargs: Any) -> Schema:
        self.fetches += 1
        if self.fail_with is not None:
            raise SchemaRegistryError(self.fail_with, self.fail_with * 100, "unavailable")
        return super().get_schema(schema_id, *args, **kwargs)


def _register(registry: SchemaRegistryClient, subject: str, schema: dict[str, Any]) -> int:
    return int(registry.register_schema(subject, Schema(json.dumps(schema), "AVRO")))


def _confluent(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def test_ids_and_writer_schemas_are_cached() -> None:
    registry = CountingRegistry()
    writer = Codec(registry_client=registry)
    first = writer.encode("MetricPoint", sample_event("MetricPoint"))
    writer.encode("MetricPoint", sample_event("MetricPoint"))
    assert registry.registers == 1
    reader = Codec(registry_client=registry)
    for _ in range(3):
        assert reader.decode(first)[0] == "MetricPoint"
    assert registry.fetches == 1
    assert writer.decode(first)[0] == "MetricPoint" and registry.fetches == 1  # own id known


def test_older_writer_schema_resolves_to_the_current_reader() -> None:
    registry = mock_registry()
    old = load_schema("PlanSubmitted")
    old["fields"] = [f for f in old["fields"] if f["name"] != "submitted_by"]
    old["fields"].append({"name": "legacy", "type": "string", "doc": "gone since v2"})
    record = {k: v for k, v in plan_submitted().items() if k != "submitted_by"} | {"legacy": "x"}
    old_id = _register(registry, "dev.devline.PlanSubmitted", old)
    event_type, decoded = Codec(registry_client=registry).decode(_confluent(old_id, old, record))
    assert event_type == "PlanSubmitted"
    assert decoded["submitted_by"] is None and "legacy" not in decoded
    assert decoded["files"][0]["path"] == "src/app/module_0.py"


@pytest.mark.timeout(5)
def test_hostile_writer_schema_in_the_registry_is_still_bounded() -> None:
    registry = mock_registry()
    writer = load_schema("MetricPoint")
    writer["fields"].append(
        {"name": "junk", "type": {"type": "array", "items": "null"}, "default": [], "doc": "x"}
    )
    schema_id = _register(registry, "dev.devline.MetricPoint", writer)
    good = _confluent(schema_id, writer, sample_event("MetricPoint") | {"junk": [None] * 3})
    codec = Codec(registry_client=registry)
    assert codec.decode(good)[1] == sample_event("MetricPoint")
    hostile = good[: -len(zz(3) + zz(0))] + zz(2**62) + zz(0)
    with pytest.raises(DecodeError, match="zero-byte items"):
        codec.decode(hostile)


def test_unknown_and_foreign_schema_ids_are_decode_errors() -> None:
    registry = CountingRegistry()
    codec = Codec(registry_client=registry)
    for _ in range(2):
        with pytest.raises(DecodeError, match="unknown schema id 77"):
            codec.decode(b"\x00" + (77).to_bytes(4, "big") + b"\x00")
    assert registry.fetches == 1  # a missing id is remembered
    foreign = {
        "type": "record",
        "name": "com.other.Thing",
        "fields": [{"name": "a", "type": "int"}],
    }
    foreign_id = _register(registry, "com.other.Thing", foreign)
    with pytest.raises(DecodeError, match=r"com\.other\.Thing, not a devline event"):
        codec.decode(_confluent(foreign_id, foreign, {"a": 1}))
    incompatible = {**load_schema("MetricPoint"), "fields": [{"name": "value", "type": "string"}]}
    bad_id = _register(registry, "dev.devline.MetricPoint", incompatible)
    with pytest.raises(DecodeError, match="cannot decode MetricPoint"):
        codec.decode(_confluent(bad_id, incompatible, {"value": "high"}))


def test_registry_outage_is_retryable_not_a_dead_letter() -> None:
    data = Codec(registry_client=mock_registry()).encode("MetricPoint", sample_event("MetricPoint"))
    with pytest.raises(RegistryUnavailable) as caught:
        Codec(registry_client=CountingRegistry(fail_with=503)).decode(data)
    assert caught.value.retryable and not caught.value.dead_letter
    assert not isinstance(caught.value, DecodeError)


def test_from_settings_uses_registry_credentials_and_limit() -> None:
    settings = Settings.from_env(
        {},
        registry_url=f"mock://{uuid.uuid4().hex}",
        registry_user="devline",
        registry_password="s3cret",  # noqa: S106 - a test credential
        max_message_bytes=4096,
    )
    codec = Codec.from_settings(settings)
    assert codec.max_bytes == 4096
    assert codec.encode("MetricPoint", sample_event("MetricPoint"))[0] == 0
    assert Codec.from_settings(Settings.from_env({})).registry is None
