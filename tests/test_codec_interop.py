"""Interop with confluent-kafka's own Avro serde: their bytes decode with ours and back."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from samples import EVENT_TYPES, fill_defaults, sample_event

from schemas import load_schema
from schemas.codec import Codec

CONTEXT = SerializationContext("devline.events", MessageField.VALUE)


def _millis(value: Any) -> Any:
    """Their deserializer turns timestamp-millis into datetimes; ours keeps int ms."""
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: _millis(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_millis(v) for v in value]
    return value


@pytest.fixture
def registry() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_confluent_deserializer_reads_our_bytes(
    event_type: str, registry: SchemaRegistryClient
) -> None:
    codec = Codec(registry_client=registry)
    record = sample_event(event_type)
    theirs = AvroDeserializer(registry)(codec.encode(event_type, record), CONTEXT)
    assert _millis(theirs) == fill_defaults(codec.schema(event_type), record)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_we_read_confluent_serializer_bytes(
    event_type: str, registry: SchemaRegistryClient
) -> None:
    serializer = AvroSerializer(
        registry,
        json.dumps(load_schema(event_type)),
        conf={"subject.name.strategy": record_subject_name_strategy},
    )
    record = sample_event(event_type)
    data = serializer(record, CONTEXT)
    assert data is not None and data[0] == 0
    subject = f"dev.devline.{event_type}"
    assert registry.get_latest_version(subject).schema_id == int.from_bytes(data[1:5], "big")
    codec = Codec(registry_client=registry)
    assert codec.decode(data) == (event_type, fill_defaults(codec.schema(event_type), record))


def test_both_sides_share_one_subject_per_record(registry: SchemaRegistryClient) -> None:
    codec = Codec(registry_client=registry)
    ours = codec.encode("PlanSubmitted", sample_event("PlanSubmitted"))
    serializer = AvroSerializer(
        registry,
        json.dumps(load_schema("PlanSubmitted")),
        conf={
            "subject.name.strategy": record_subject_name_strategy,
            "auto.register.schemas": False,
            "use.latest.version": True,
        },
    )
    theirs = serializer(sample_event("PlanSubmitted"), CONTEXT)
    assert theirs is not None and theirs[:5] == ours[:5]  # same subject, same schema id
    assert registry.get_subjects() == ["dev.devline.PlanSubmitted"]
