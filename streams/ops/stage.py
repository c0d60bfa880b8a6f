"""The ops stage on Kafka: one process that reads, from their beginning, the plan events
(`devline.events`), the closed metric windows (`devline.metrics.windows`, compacted) and
its own past decisions (`devline.ops`), and the worker heartbeats from 20 s back. It
decides nothing before it has read all of them to the end offsets seen at start: the
governor's cool-downs and taken ids are rebuilt from the past decisions first, so a
restart neither repeats nor hurries a decision. Then, every `interval_s`, one tick of
`OpsCore` and each decision as an `OpsDecision` on `devline.ops` (key: plan id, else the
target). No consumer group: every input is read whole, and the state is rebuilt from the
topics on each start (nothing to commit)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.ops import Decision
from devline.errors import BrokerUnavailable, DecodeError
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import reached, topic_partitions
from streams.emit import headers_for
from streams.ops.core import OpsConfig, OpsCore
from streams.ops.records import decision_of

log = logging.getLogger("devline.ops")

HEARTBEATS_BACK_S = 20.0  # older heartbeats say nothing about the pool now
Clock = Callable[[], float]  # seconds since the epoch


class OpsStage:
    """Records in (`feed`), decisions out (`tick`); `run` is the Kafka loop around them."""

    def __init__(self, settings: Settings, config: OpsConfig | None = None, *,
                 codec: Codec | None = None, clock: Clock = time.time) -> None:
        self.s = settings
        self.core = OpsCore(config)
        self.codec = codec or Codec.from_settings(settings)
        self.clock = clock
        self.caught_up = False
        self.past: list[Decision] = []     # read before catching up: the governor's memory
        self.pending: list[Decision] = []  # decided, not yet acknowledged by the broker
        self.sent = 0
        self._topics = {settings.topic(t): t for t in
                        (T.EVENTS, T.METRICS_WINDOWS, T.WORKERS, T.OPS)}

    # -- records in --------------------------------------------------------------------
    def feed(self, topic: str, record: Any) -> None:
        """One raw record of one of the inputs (full topic name)."""
        try:
            event_type, value = self.codec.decode(record.value or b"")
        except DecodeError:
            return  # not ours to dead-letter: each topic's owner does
        match self._topics.get(topic):
            case T.EVENTS:
                self.core.facts.on_event(event_type, value, record.offset, record.timestamp)
            case T.METRICS_WINDOWS if event_type == "MetricAggregate":
                self.core.on_window(value)
            case T.WORKERS if event_type == "WorkerHeartbeat":
                self.core.facts.on_heartbeat(value)
            case T.OPS if event_type == "OpsDecision":
                decision = decision_of(value)
                if decision is None:
                    return
                if self.caught_up:
                    self.core.facts.on_decision(decision)  # ours read back, or an operator's
                else:
                    self.past.append(decision)

    def catch_up(self) -> None:
        """Everything up to the start is read: rebuild the governor, then decide."""
        self.core.restore(self.past)
        log.info("ops: caught up (%d past decisions, %d live plans, %d windows)%s",
                 len(self.past), len(self.core.facts.plans), len(self.core.aggregates),
                 " [dry run]" if self.core.config.dry_run else "")
        self.past = []
        self.caught_up = True

    # -- decisions out ---------------------------------------------------------------------
    def decide(self, now_ms: int) -> list[Decision]:
        decisions = self.core.decide(now_ms)
        for s in self.core.suppressed:
            log.debug("ops: held %s %s: %s", s.proposal.action, s.proposal.target, s.why)
        for d in decisions:
            log.info("ops: %s %s %s%s: %s (evidence %s)", d.decision_id, d.action, d.target,
                     "" if d.acted else " [dry run]", d.reason, ", ".join(d.evidence))
        self.pending.extend(decisions)
        return decisions

    async def publish(self, producer: AIOKafkaProducer) -> None:
        """Send what is pending; what fails is sent again next tick (same decision id)."""
        left = []
        for d in self.pending:
            record = d.to_record()
            try:
                await producer.send_and_wait(
                    self.s.topic(T.OPS), key=(d.plan_id or d.target).encode(),
                    value=self.codec.encode("OpsDecision", record),
                    headers=headers_for("OpsDecision", record))
                self.sent += 1
            except Exception as exc:
                log.warning("ops: decision %s not sent (%s); retrying", d.decision_id, exc)
                left.append(d)
        self.pending = left

    # -- the loop -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Read, catch up, then tick every `interval_s` until `stop` is set (or cancelled)."""
        s = self.s
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
            max_partition_fetch_bytes=s.max_message_bytes, **s.kafka_common())
        producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks="all",
                                    max_request_size=s.max_message_bytes, **s.kafka_common())
        try:
            await consumer.start()
            await producer.start()
        except Exception as exc:
            for c in (consumer, producer):
                with contextlib.suppress(Exception):
                    await c.stop()
            raise BrokerUnavailable(f"no Kafka broker at {s.bootstrap}: {exc}") from exc
        try:
            ends = await self._assign(consumer)
            await self._loop(consumer, producer, ends, stop or asyncio.Event())
        finally:
            with contextlib.suppress(Exception):
                await self.publish(producer)
            for c in (consumer, producer):
                with contextlib.suppress(Exception):
                    await c.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
        parts: dict[str, list[TopicPartition]] = {}
        for name in self._topics:
            parts[name] = await topic_partitions(consumer, name)
        everything = [tp for tps in parts.values() for tp in tps]
        consumer.assign(everything)
        await consumer.seek_to_beginning(*everything)
        heartbeats = parts[self.s.topic(T.WORKERS)]
        since = int((self.clock() - HEARTBEATS_BACK_S) * 1000)
        found = await consumer.offsets_for_times({tp: since for tp in heartbeats})
        for tp in heartbeats:
            at = found.get(tp)
            if at is not None:
                consumer.seek(tp, at.offset)
            else:
                await consumer.seek_to_end(tp)
        return {tp: int(end) for tp, end in (await consumer.end_offsets(everything)).items()}

    async def _loop(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer,
                    ends: dict[TopicPartition, int], stop: asyncio.Event) -> None:
        interval = self.core.config.interval_s
        next_tick = 0.0
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batches.items():
                for record in records:
                    self.feed(tp.topic, record)
            if not self.caught_up:
                if not await reached(consumer, ends):
                    continue
                self.catch_up()
            now = self.clock()
            if now >= next_tick:
                next_tick = now + interval
                self.decide(int(now * 1000))
            if self.pending:
                await self.publish(producer)


async def run_ops(settings: Settings, config: OpsConfig | None = None, *,
                  stop: asyncio.Event | None = None, clock: Clock = time.time) -> OpsStage:
    """Run the ops stage until `stop` is set; return it (for its counters)."""
    stage = OpsStage(settings, config, clock=clock)
    await stage.run(stop)
    return stage
