"""What the log and the heartbeats say about a work item, for `agents.scheduling.stale`.

A worker asks only about items that may be stale: ones dispatched to another worker (the
partition moved here, or a lease re-opened the task) or waiting longer than a few seconds.
It reads the item's plan partition of devline.events from the item's own TaskDispatched
to the end, and the last few seconds of devline.workers. No consumer group: nothing is
committed, nothing rebalances.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.scheduling.stale import stale_reason
from devline.errors import DecodeError
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.emit import now_ms
from streams.lifecycle import shut, started

log = logging.getLogger("devline.worker")

# As long as the processor waits before it calls a silent worker gone: a busy owner whose
# heartbeats are late still counts as running the item (a wrong skip only waits for the
# lease; a wrong run is a duplicate).
RECENT_HEARTBEATS_MS = 15_000
READ_TIMEOUT_S = 15.0


class StalenessProbe:
    def __init__(self, settings: Settings, codec: Codec, worker_id: str,
                 slot: str | None = None) -> None:
        self.settings = settings
        self.codec = codec
        self.worker_id = worker_id
        self.slot = slot  # earlier incarnations of our slot are dead: Kafka fenced them
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()  # one assignment at a time on the shared consumer

    async def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            s = self.settings
            consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False,
                                        max_partition_fetch_bytes=s.max_message_bytes,
                                        fetch_max_wait_ms=50, **s.kafka_common())
            self._consumer = await started(consumer)
        return self._consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await shut(self._consumer)
            self._consumer = None

    async def reason(self, item: dict[str, Any]) -> str | None:
        """Why the item must not run, or None. Raises on a broker error (callers retry)."""
        async with self._lock:
            consumer = await self._client()
            later = await asyncio.wait_for(self._later(consumer, item), READ_TIMEOUT_S)
            running = await asyncio.wait_for(self._running_elsewhere(consumer, item),
                                             READ_TIMEOUT_S)
        return stale_reason(item, later, running)

    async def _read(self, consumer: AIOKafkaConsumer, starts: dict[TopicPartition, int]
                    ) -> list[Any]:
        consumer.assign(list(starts))
        ends = await consumer.end_offsets(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        out: list[Any] = []
        while True:
            behind = [tp for tp in starts if await consumer.position(tp) < ends[tp]]
            if not behind:
                return out
            batch = await consumer.getmany(*behind, timeout_ms=200)
            for tp, records in batch.items():
                out += [r for r in records if r.offset < ends[tp]]

    async def _later(self, consumer: AIOKafkaConsumer, item: dict[str, Any]
                     ) -> list[tuple[str, dict[str, Any]]]:
        if item.get("dispatch_partition") is None or item.get("dispatch_offset") is None:
            return []
        tp = TopicPartition(self.settings.topic(T.EVENTS), int(item["dispatch_partition"]))
        key, task = item["plan_id"].encode(), item["task_id"].encode()
        found = []
        for r in await self._read(consumer, {tp: int(item["dispatch_offset"])}):
            if r.key != key or dict(r.headers or ()).get("task-id") != task:
                continue
            try:
                found.append(self.codec.decode(r.value or b""))
            except DecodeError:
                continue
        return found

    def _us(self, worker_id: str) -> bool:
        return worker_id == self.worker_id or (
            self.slot is not None and worker_id.rsplit(".", 1)[0] == self.slot)

    async def _running_elsewhere(self, consumer: AIOKafkaConsumer, item: dict[str, Any]
                                 ) -> list[str]:
        topic = self.settings.topic(T.WORKERS)
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:  # a client without subscriptions tracks no topic's metadata: add it
            await consumer._client.add_topic(topic)
            parts = consumer.partitions_for_topic(topic) or set()
        if not parts:  # unknown is not "running nowhere": the caller asks again
            raise RuntimeError(f"no partitions known for {topic} yet")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        since = now_ms() - RECENT_HEARTBEATS_MS
        found = await consumer.offsets_for_times({tp: since for tp in tps})
        ends = await consumer.end_offsets(tps)
        starts = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
        latest: dict[str, dict[str, Any]] = {}
        for r in await self._read(consumer, starts):
            try:
                event_type, hb = self.codec.decode(r.value or b"")
            except DecodeError:
                continue
            if event_type == "WorkerHeartbeat" and not self._us(hb["worker_id"]):
                latest[hb["worker_id"]] = hb
        name = f"{item['plan_id']}/{item['task_id']}"
        return sorted(w for w, hb in latest.items()
                      if hb["state"] != "stopped" and name in hb["running"])
