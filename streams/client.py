"""Client-side helpers for the CLI and tests: produce plans, read topics, replay the log."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.scheduling import fold as F
from devline.errors import BrokerUnavailable, DecodeError
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.emit import headers_for
from streams.lifecycle import started


async def produce(settings: Settings, topic: str, event_type: str, record: dict[str, Any],
                  key: str, codec: Codec | None = None) -> tuple[int, int]:
    """Encode and send one event; return (partition, offset) once the broker has it."""
    codec = codec or Codec.from_settings(settings)
    value = codec.encode(event_type, record)  # validate before touching Kafka
    return await send_raw(settings, settings.topic(topic), key.encode(), value,
                          headers_for(event_type, record))


async def publish_plan(settings: Settings, record: dict[str, Any]) -> tuple[int, int]:
    """Submit a plan: one PlanSubmitted, its files by reference when they are too big for
    a record (stored in the artifact store first)."""
    from streams.claims import submission

    codec = Codec.from_settings(settings)
    value = codec.encode_unbounded("PlanSubmitted", record)  # validates, any size
    sent = await submission(record, len(value), settings.artifact_store())
    if sent is not record:  # by reference: a small record of its own
        value = codec.encode("PlanSubmitted", sent)
    return await send_raw(settings, settings.topic(T.PLANS), sent["plan_id"].encode(), value,
                          headers_for("PlanSubmitted", sent))


async def send_raw(settings: Settings, topic: str, key: bytes | None, value: bytes | None,
                   headers: list[tuple[str, bytes]], partition: int | None = None
                   ) -> tuple[int, int]:
    """Send bytes as they are to a full topic name; (partition, offset) once acknowledged."""
    producer = await started(AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all",
                                              max_request_size=settings.max_message_bytes,
                                              **settings.kafka_common()),
                             failed=unreachable(settings))
    try:
        meta = await producer.send_and_wait(topic, key=key, value=value, partition=partition,
                                            headers=headers)
        return meta.partition, meta.offset
    finally:
        await producer.stop()


async def started_consumer(settings: Settings, **options: Any) -> AIOKafkaConsumer:
    """A started consumer with no group, or BrokerUnavailable (and nothing left open)."""
    return await started(AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, **options,
                                          **settings.kafka_common()),
                         failed=unreachable(settings))


def unreachable(settings: Settings) -> Callable[[Exception], BrokerUnavailable]:
    """A failed client start as the CLI reports it (it probes for the cause)."""
    return lambda exc: BrokerUnavailable(f"no Kafka broker at {settings.bootstrap}: {exc}")


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = await started_consumer(settings)
    try:
        parts = await topic_partitions(consumer, settings.topic(topic))
        ends = await consumer.end_offsets(parts)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def plan_partition(settings: Settings, plan_id: str) -> int:
    """The partition of devline.events that holds a plan's events (its key's partition,
    as every producer's default partitioner computes it)."""
    from aiokafka.partitioner import DefaultPartitioner

    consumer = await started_consumer(settings)
    try:
        parts = [tp.partition for tp in await topic_partitions(consumer, settings.topic(T.EVENTS))]
    finally:
        await consumer.stop()
    return int(DefaultPartitioner()(plan_id.encode(), parts, parts))


async def sink_position(settings: Settings, partition: int) -> int | None:
    """The file sink's committed offset in one partition of devline.events (None if it has
    committed nothing there)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.kafka_common())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.group("devline-sink"))
    finally:
        await admin.close()
    found = offsets.get(TopicPartition(settings.topic(T.EVENTS), partition))
    return int(found.offset) if found is not None and found.offset >= 0 else None


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """A topic's partitions, sorted, once the consumer's metadata has them (a topic just
    created may take a few refreshes); BrokerUnavailable when it does not exist."""
    for _ in range(50):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        await consumer._client.force_metadata_update()
        await _sleep(0.1)
    raise BrokerUnavailable(f"topic {topic} does not exist (run `devline topics create`)")


async def reached(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    """Whether the consumer's position has reached `ends` in every partition."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


async def records(settings: Settings, topic: str, *, from_beginning: bool = True,
                  start: dict[int, int] | None = None, idle_timeout: float | None = 2.0,
                  follow: bool = False, partitions: list[int] | None = None
                  ) -> AsyncIterator[Any]:
    """Raw records of a topic without a consumer group (no offsets committed).

    Without `follow`, reads a snapshot: stops at the end offsets seen when it started (or
    after `idle_timeout` seconds with nothing new, whichever comes first). `partitions`
    limits the read to those partitions.
    """
    consumer = await started_consumer(settings, enable_auto_commit=False,
                                      max_partition_fetch_bytes=settings.max_message_bytes,
                                      fetch_max_wait_ms=100)
    try:
        parts = await topic_partitions(consumer, settings.topic(topic))
        if partitions is not None:
            parts = [tp for tp in parts if tp.partition in partitions]
        consumer.assign(parts)
        for tp in parts:
            if start is not None:
                consumer.seek(tp, start.get(tp.partition, 0))
            elif from_beginning:
                await consumer.seek_to_beginning(tp)
            else:
                await consumer.seek_to_end(tp)
        ends = {} if follow else await consumer.end_offsets(parts)
        last = time.monotonic()
        while True:
            if not follow and await reached(consumer, ends):
                return
            batch = await consumer.getmany(timeout_ms=200)
            got = [r for rs in batch.values() for r in rs
                   if follow or r.offset < ends[TopicPartition(r.topic, r.partition)]]
            got.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
            for record in got:
                yield record
            if got:
                last = time.monotonic()
            elif not follow and idle_timeout is not None and time.monotonic() - last > idle_timeout:
                return
    finally:
        await consumer.stop()




def decode_for_display(codec: Codec, record: Any) -> dict[str, Any]:
    """A JSON-able view of a record; undecodable ones are shown as such, not fatal."""
    head = {"topic": record.topic, "partition": record.partition, "offset": record.offset,
            "timestamp": record.timestamp,
            "key": record.key.decode("utf-8", "replace") if record.key else None,
            "headers": {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}}
    try:
        event_type, value = codec.decode(record.value or b"")
        return {**head, "type": event_type, "value": value}
    except DecodeError as exc:
        raw = record.value or b""
        return {**head, "type": None, "error": str(exc), "raw_hex": raw[:64].hex(),
                "raw_size": len(raw)}


async def replay(settings: Settings, plan_id: str | None = None, *, codec: Codec | None = None,
                 idle_timeout: float = 1.5) -> dict[str, F.PlanState]:
    """Fold `devline.events` from the beginning: the state every plan is in, per the log."""
    codec = codec or Codec.from_settings(settings)
    states: dict[str, F.PlanState] = {}
    by_partition: dict[int, list[Any]] = {}
    # One plan lives in one partition: read only that one.
    only = [await plan_partition(settings, plan_id)] if plan_id is not None else None
    async for record in records(settings, T.EVENTS, idle_timeout=idle_timeout,
                                partitions=only):
        by_partition.setdefault(record.partition, []).append(record)
    # Within a partition the log order is the fold order; plans never span partitions.
    for part in sorted(by_partition):
        for record in sorted(by_partition[part], key=lambda r: r.offset):
            if plan_id is not None and record.key != plan_id.encode():
                continue
            try:
                event_type, value = codec.decode(record.value or b"")
            except DecodeError:
                continue
            pid = value.get("plan_id")
            if not pid:
                continue
            if event_type == "PlanRetired":  # gone from the live tables, not from history
                if pid in states and states[pid].header:
                    states[pid].header["retired_at"] = value["retired_at"]
                continue
            F.apply(states.setdefault(pid, F.PlanState()), event_type, value, record.offset)
    return {pid: st for pid, st in states.items() if st.header}


def _detail(event_type: str, v: dict[str, Any]) -> str:
    if event_type == "PlanAccepted":
        return f"{len(v['tasks'])} files, critical path {len(v['critical_path'])}"
    if event_type == "PlanRejected":
        return str(v["reason"])
    if event_type == "TaskCompleted":
        took = "cached" if v["cached"] else f"{v['finished_at'] - v['started_at']} ms"
        qa = v.get("qa")
        if qa:
            ran = [c["name"] for c in qa["checks"] if c["status"] != "skipped"]
            skipped = [c["name"] for c in qa["checks"] if c["status"] == "skipped"]
            took += f", verified ({', '.join(ran) or 'no checks'}" + (
                f"; skipped {', '.join(skipped)})" if skipped else ")")
        return took
    if event_type == "TaskFailed":
        return f"{v['error_type']}: {v['error']}"[:120]
    if event_type == "TaskRetryScheduled":
        return f"in {v['delay_ms']} ms: {v['reason']}"[:120]
    if event_type == "TaskDeadLettered":
        return str(v["reason"])[:120]
    if event_type == "IntegrationStarted":
        return (f"round {v['round']} ({v['scope']}): {v['tests_total']} tests on "
                f"{len(v['shards'])} shard(s)")
    if event_type == "IntegrationResult":
        bad = [f"{f['test_id']} -> {', '.join(f['files'][:1])}" for f in v.get("failures") or []]
        flaky = v.get("flaky_tests") or []
        return (f"shard {v['shard'] + 1}/{v['shards']}: {v.get('tests', 0)} tests, "
                f"{v['duration_ms']} ms" + (f", failed {'; '.join(bad)}" if bad else "")
                + (f", flaky {', '.join(flaky)}" if flaky else "")
                + (f", error {v['error']}" if v.get("error") else ""))[:200]
    if event_type == "PlanRetired":
        return f"left the live tables ({v['status']})"
    if event_type == "PlanCompleted":
        return f"makespan {v['makespan_ms']} ms, {v['cache_hits']} cache hits"
    return ""


async def plan_timeline(settings: Settings, plan_id: str) -> list[dict[str, Any]]:
    """One plan's events in log order, with time since the first and a short detail."""
    codec = Codec.from_settings(settings)
    found = []
    only = [await plan_partition(settings, plan_id)]
    async for record in records(settings, T.EVENTS, idle_timeout=1.0, partitions=only):
        if record.key != plan_id.encode():
            continue
        try:
            event_type, v = codec.decode(record.value or b"")
        except DecodeError:
            continue
        found.append((record.offset, record.timestamp, event_type, v))
    found.sort()
    start = found[0][1] if found else 0
    return [{"t": ts - start, "offset": off, "type": et, "task": v.get("task_id"),
             "attempt": v.get("attempt"), "worker": v.get("worker_id"), "detail": _detail(et, v)}
            for off, ts, et, v in found]
