"""Every schema through the real broker: produce with aiokafka, consume back, decode."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from samples import EVENT_TYPES, fill_defaults, plan_submitted, sample_event

from schemas.codec import Codec

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def _through_kafka(bootstrap: str, messages: list[tuple[str, bytes]]) -> list[Any]:
    """Produce `(event type, value)` pairs to a fresh topic and consume them back in order."""
    topic = f"test-codec-{uuid.uuid4().hex}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip")
        await producer.start()
        try:
            for event_type, value in messages:
                await producer.send_and_wait(
                    topic, value, key=b"plan-7f3a", headers=[("event-type", event_type.encode())]
                )
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=f"{topic}-reader",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            received: list[Any] = []
            while len(received) < len(messages):
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), timeout=30)
                for records in batch.values():
                    received.extend(records)
            return received
        finally:
            await consumer.stop()
    finally:
        await admin.delete_topics([topic])
        await admin.close()


@pytest.mark.parametrize("mode", ["single-object", "confluent"])
def test_every_schema_round_trips_through_the_broker(kafka_bootstrap: str, mode: str) -> None:
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    codec = Codec(registry_client=registry) if mode == "confluent" else Codec()
    records = {t: sample_event(t) for t in EVENT_TYPES}
    records["PlanSubmitted"] = plan_submitted(100)  # a big one, too (~25 KB)
    sent = [(t, codec.encode(t, r)) for t, r in records.items()]
    received = asyncio.run(_through_kafka(kafka_bootstrap, sent))
    assert [m.value for m in received] == [value for _, value in sent]
    for message in received:
        event_type, record = codec.decode(message.value)
        assert dict(message.headers)["event-type"] == event_type.encode()
        assert record == fill_defaults(codec.schema(event_type), records[event_type])
