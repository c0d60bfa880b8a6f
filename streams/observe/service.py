"""The read side's Kafka edge: three topics in, projections and window records out.

One consumer, assigned every partition of `devline.events`, `devline.metrics` and
`devline.workers` (every instance sees every plan: the read side is not sharded), in the
`devline-observe` group, where it commits what it read for `kafka-consumer-groups` to
show; nothing of the pipeline reads that group. Where it starts:

- `devline.events` and `devline.rollouts` from the newest snapshot's offsets, with its
  state restored (`observe.snapshot`; one is written every `observe_snapshot_s` and on a
  clean stop), else from the beginning: the projections live in memory and are the fold of
  the log (finished plans are dropped as the read goes, so memory is the live plans).
- `devline.metrics` from `windows.replay_from` by timestamp (`offsets_for_times`), or from
  the beginning with `from_beginning`; closed windows go to `devline.metrics.windows`.
- `devline.workers` from 20 s back: enough heartbeats to know who is alive.

It is *caught up* once it has read every partition up to the end offsets it saw when it
started; only then does the clock close windows (`tick`), and only then are changes
published to WebSocket subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.metrics import DEFAULT_SPECS, Aggregate, WindowSpec
from devline.errors import DecodeError
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.emit import headers_for
from streams.lifecycle import running
from streams.observe.projection import PlanProjection, WorkerView
from streams.observe.prom import ObserveMetrics
from streams.observe.rollouts import RolloutGauges, RolloutView
from streams.observe.snapshot import Encoder, Offsets, Snapshot, load, restore, snapshot_ref
from streams.observe.windows import WindowStage, from_avro, replay_from, to_avro

log = logging.getLogger("devline.observe")

GROUP = "devline-observe"
INPUTS = (T.EVENTS, T.METRICS, T.WORKERS, T.ROLLOUTS)
HEARTBEAT_LOOKBACK_MS = 20_000
TICK_MS = 1_000
COMMIT_S = 5.0

Publish = Callable[[str, dict[str, Any]], Any]


class ObserveService:
    """Folds the logs into projections and writes closed metric windows; `run` until stopped."""

    def __init__(self, settings: Settings, *, specs: Sequence[WindowSpec] = DEFAULT_SPECS,
                 from_beginning: bool = False, idle_ms: int = 10_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.specs = tuple(specs)
        self.from_beginning = from_beginning
        self.clock = clock
        self.codec = Codec.from_settings(settings)
        self.plans = PlanProjection(retention_ms=int(settings.plan_retention_s * 1000))
        self.workers = WorkerView()
        self.windows = WindowStage(self.specs, idle_ms=idle_ms)
        self.lag: dict[str, int] = {}
        self.metrics = ObserveMetrics(self.plans, self.workers, lambda: dict(self.lag))
        self.rollouts = RolloutView()
        self.metrics.registry.register(RolloutGauges(self.rollouts))
        self.caught_up = asyncio.Event()
        self.caught_up_s: float | None = None
        self.publish: Publish | None = None  # set by the web layer when a hub is mounted
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._ends: dict[TopicPartition, int] = {}
        self._unsent: list[Aggregate] = []
        self._started = time.monotonic()
        self._stop = asyncio.Event()
        self.snapshot_s = settings.observe_snapshot_s
        self.restored: Snapshot | None = None  # the snapshot this run started from
        self._snapshot_at = 0.0
        self._snapshot_offsets: Offsets | None = None
        self._encoder = Encoder()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        """Start, read until `stop()`, then close the clients."""
        from streams.topics import wait_for_topics

        s = self.settings
        self._started = time.monotonic()
        wanted = tuple(spec for spec in T.CATALOGUE if spec.name in (*INPUTS, T.METRICS_WINDOWS))
        await wait_for_topics(s, specs=wanted)
        self._producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks="all",
                                          linger_ms=20, max_request_size=s.max_message_bytes,
                                          **s.kafka_common())
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap, group_id=s.group(GROUP), enable_auto_commit=False,
            max_partition_fetch_bytes=s.max_message_bytes, fetch_max_wait_ms=200,
            metadata_max_age_ms=5_000, **s.kafka_common())
        async with running(self._producer), running(self._consumer):
            try:
                await self._position(await self._last_close_ms())
                await self._loop()
            finally:
                with contextlib.suppress(Exception):
                    await self._flush()
                    await self._commit()
                if self.caught_up.is_set():
                    await self._snapshot()

    def stop(self) -> None:
        self._stop.set()

    # -- start positions ------------------------------------------------------------------
    async def _position(self, last_close_ms: int | None) -> None:
        from streams.client import topic_partitions

        c, s = self._consumer, self.settings
        assert c is not None
        parts = {name: await topic_partitions(c, s.topic(name)) for name in INPUTS}
        everything = [tp for tps in parts.values() for tp in tps]
        c.assign(everything)
        now = self.now_ms()
        folded = [*parts[T.EVENTS], *parts[T.ROLLOUTS]]
        # Where each partition starts (None: at its end). Every offset is looked up first
        # and set last: a partition with a position starts fetching, and each request
        # after that waits behind the fetch's long poll on the connection (0.2 s each).
        starts: dict[TopicPartition, int | None] = {}
        snap = await self._restore(folded)
        if snap is not None:
            starts.update({tp: snap.offsets[self._name(tp)][tp.partition] for tp in folded})
        beginning = folded if snap is None else []
        if self.from_beginning:
            beginning = [*beginning, *parts[T.METRICS]]
        else:
            since = replay_from(now, self.specs, last_close_ms)
            self.windows.floor_ms = since
            starts.update(await self._offsets_at(parts[T.METRICS], since))
        starts.update(await self._offsets_at(parts[T.WORKERS], now - HEARTBEAT_LOOKBACK_MS))
        if beginning:
            starts.update(await c.beginning_offsets(beginning))
        self._ends = await c.end_offsets(everything)
        for tp, offset in starts.items():
            c.seek(tp, self._ends[tp] if offset is None else offset)
        log.info("observe: reading %d partitions; metrics from %s", len(self._ends),
                 "the beginning" if self.from_beginning else f"{now - self.windows.floor_ms}"
                 " ms back")

    def _name(self, tp: TopicPartition) -> str:
        return tp.topic[len(self.settings.topic_prefix):]

    async def _restore(self, tps: list[TopicPartition]) -> Snapshot | None:
        """Restore the newest snapshot whose offsets fit these partitions; None if none."""
        c = self._consumer
        assert c is not None
        if self.snapshot_s <= 0:
            return None
        store = self.settings.artifact_store()
        try:
            digest = await store.get_ref(snapshot_ref(self.settings.topic_prefix))
            data = await store.get(digest) if digest else None
            if data is None:
                return None
            snap = load(data)
        except Exception as exc:  # a snapshot is a shortcut: without it, fold it all
            log.warning("observe: snapshot not restored (%s); reading from the beginning", exc)
            return None
        first = await c.beginning_offsets(tps)
        last = await c.end_offsets(tps)
        for tp in tps:
            at = snap.offsets.get(self._name(tp), {}).get(tp.partition)
            if at is None or not first[tp] <= at <= last[tp]:
                log.warning("observe: snapshot of %s does not fit %s[%d] (offset %s, log "
                            "%d..%d); reading from the beginning", time.strftime(
                                "%Y-%m-%d %H:%M:%S", time.gmtime(snap.taken_at_ms / 1000)),
                            tp.topic, tp.partition, at, first[tp], last[tp])
                return None
        restore(snap, self.plans, self.rollouts)
        self.restored = snap
        self._snapshot_offsets = snap.offsets
        log.info("observe: restored the snapshot of %s (%d live plans); reading on from it",
                 time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(snap.taken_at_ms / 1000)),
                 len(snap.plans))
        return snap

    async def _snapshot(self) -> None:
        """Write the projections and the offsets they include, if they moved on."""
        c = self._consumer
        if self.snapshot_s <= 0 or c is None:
            return
        try:
            offsets: Offsets = {}
            for tp in c.assignment():
                name = self._name(tp)
                if name in (T.EVENTS, T.ROLLOUTS):
                    offsets.setdefault(name, {})[tp.partition] = await c.position(tp)
            if offsets == self._snapshot_offsets:
                return
            data = self._encoder.dump(self.plans, self.rollouts, offsets, self.now_ms())
            store = self.settings.artifact_store()
            await store.put_ref(snapshot_ref(self.settings.topic_prefix), await store.put(data))
            self._snapshot_offsets = offsets
            log.debug("observe: snapshot of %d live plans written (%d bytes)",
                      len(self.plans.plans), len(data))
        except Exception as exc:  # the next one may succeed; a start without one folds all
            log.warning("observe: snapshot not written: %s", exc)

    async def _offsets_at(self, tps: list[TopicPartition], at_ms: int
                          ) -> dict[TopicPartition, int | None]:
        """The first offset at or after `at_ms` per partition; None where nothing is as
        recent (only what comes next is read there)."""
        c = self._consumer
        assert c is not None
        found = await c.offsets_for_times({tp: max(at_ms, 0) for tp in tps})
        return {tp: (hit.offset if (hit := found.get(tp)) is not None else None) for tp in tps}

    async def _last_close_ms(self) -> int | None:
        """The close time of the newest window already on the windows topic (its last
        record), or None when it is empty."""
        from streams.client import topic_partitions

        s = self.settings
        reader = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False,
                                  max_partition_fetch_bytes=s.max_message_bytes,
                                  **s.kafka_common())
        async with running(reader):
            tps = await topic_partitions(reader, s.topic(T.METRICS_WINDOWS))
            reader.assign(tps)
            ends = await reader.end_offsets(tps)
            newest: int | None = None
            grace = {spec.size_ms: spec.grace_ms for spec in self.specs}
            for tp, end in ends.items():
                if end <= 0:
                    continue
                reader.seek(tp, end - 1)
                got = await reader.getmany(tp, timeout_ms=5_000)
                for rec in got.get(tp, []):
                    try:
                        _, value = self.codec.decode(rec.value or b"")
                        agg = from_avro(value)
                    except (DecodeError, KeyError, ValueError):
                        continue
                    close = agg.window_end + grace.get(agg.window_size, 0)
                    newest = close if newest is None else max(newest, close)
            return newest

    # -- the loop -------------------------------------------------------------------------
    async def _loop(self) -> None:
        c = self._consumer
        assert c is not None
        last_tick = last_commit = 0.0
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                fetch = asyncio.ensure_future(c.getmany(timeout_ms=200, max_records=5_000))
                await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await fetch
                    break
                for tp, recs in fetch.result().items():
                    for rec in recs:
                        self._record(tp, rec)
                if not self.caught_up.is_set():
                    await self._check_caught_up()
                now = time.monotonic()
                if now - last_tick >= TICK_MS / 1000:
                    last_tick = now
                    await self._tick()
                await self._flush()
                if now - last_commit >= COMMIT_S:
                    last_commit = now
                    await self._commit()
                if self.caught_up.is_set() and now - self._snapshot_at >= self.snapshot_s > 0:
                    self._snapshot_at = now
                    await self._snapshot()
        finally:
            stopping.cancel()

    def _record(self, tp: TopicPartition, rec: Any) -> None:
        topic = self._name(tp)
        try:
            event_type, value = self.codec.decode(rec.value or b"")
        except DecodeError:
            self.metrics.undecodable.labels(topic).inc()
            return
        if topic == T.EVENTS:
            self._event(event_type, value, rec.offset)
        elif topic == T.METRICS and event_type == "MetricPoint":
            self.workers.point(value, rec.timestamp)
            closed = self.windows.add(value, rec.timestamp)
            self._emit(closed)
        elif topic == T.ROLLOUTS and rec.key:
            plan = rec.key.decode("utf-8", "replace")
            if self.rollouts.record(plan, event_type, value, int(rec.timestamp)):
                view = self.rollouts.view(plan, int(rec.timestamp))
                if view is not None:
                    self._publish(f"rollout:{plan}", view)
        elif (topic == T.WORKERS and event_type == "WorkerHeartbeat"
              and self.workers.heartbeat(value, rec.timestamp)):
            self._publish("workers", self.workers.snapshot())

    def _event(self, event_type: str, value: dict[str, Any], offset: int) -> None:
        if self.plans.fresh(value):
            self.metrics.on_event(event_type, value)
        delta = self.plans.apply(event_type, value, offset)
        if delta is not None:
            self._publish(f"plan:{delta.plan_id}", delta.to_dict())

    def _emit(self, closed: list[Aggregate]) -> None:
        self._unsent.extend(closed)
        for agg in closed:
            self._publish(f"metric:{agg.metric}",
                          {k: v for k, v in to_avro(agg).items() if k != "sketch"})

    def _publish(self, channel: str, data: dict[str, Any]) -> None:
        if self.publish is not None and self.caught_up.is_set():
            self.publish(channel, data)

    async def _tick(self) -> None:
        now = self.now_ms()
        self.plans.evict(now)
        if self.caught_up.is_set():
            self._emit(self.windows.tick(now))
            if self.workers.expire(now):
                self._publish("workers", self.workers.snapshot())
        await self._measure_lag()

    async def _check_caught_up(self) -> None:
        c = self._consumer
        assert c is not None
        for tp, end in self._ends.items():
            if await c.position(tp) < end:
                return
        self.caught_up_s = time.monotonic() - self._started
        self.caught_up.set()
        log.info("observe: caught up in %.1f s (%d live plans, %d workers)",
                 self.caught_up_s, len(self.plans.plans), self.workers.current())

    async def _measure_lag(self) -> None:
        c = self._consumer
        assert c is not None
        lag: dict[str, int] = {}
        for tp in c.assignment():
            high = c.highwater(tp)
            if high is None:
                continue
            topic = self._name(tp)
            lag[topic] = lag.get(topic, 0) + max(high - await c.position(tp), 0)
        self.lag = lag

    async def _flush(self) -> None:
        """Write the closed windows; one that fails is kept and written again next time."""
        if not self._unsent or self._producer is None:
            return
        batch, self._unsent = self._unsent, []
        topic = self.settings.topic(T.METRICS_WINDOWS)
        sent = []
        for agg in batch:
            rec = to_avro(agg)
            sent.append(await self._producer.send(
                topic, key=agg.key.encode(), value=self.codec.encode("MetricAggregate", rec),
                headers=headers_for("MetricAggregate", rec)))
        results = await asyncio.gather(*sent, return_exceptions=True)
        failed = [agg for agg, r in zip(batch, results, strict=True) if isinstance(r, Exception)]
        if failed:
            log.warning("observe: %d window records not written (%s); retrying",
                        len(failed), next(r for r in results if isinstance(r, Exception)))
            self._unsent = failed + self._unsent

    async def _commit(self) -> None:
        c = self._consumer
        if c is None:
            return
        try:
            await c.commit()
        except Exception as exc:  # the group's offsets are informative only
            log.debug("observe: commit failed: %s", exc)
