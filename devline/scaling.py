"""Pool scaling for the supervisor: load readings from devline.metrics, the pure policy
that turns them into a pool size, and the replica metrics it publishes back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agents.resilience.autoscale import AutoscaleConfig, Autoscaler, ScaleDecision
from devline.settings import Settings

if TYPE_CHECKING:
    from devline.supervisor import Child

log = logging.getLogger("devline.supervisor")

TICK_S = 1.0  # the processor publishes its load once a second
STALE_AFTER_S = 10.0  # no load reading for this long: hold the pool as it is
# An acted ops `scale` decision sets the pool for this long, then the autoscaler has it
# again: the governor's own cool-down for scale, so it can renew the target but never flap.
OPS_HOLD_S = 60.0
OPS_LOOKBACK = 20  # decisions per partition of devline.ops read again on start


# -- pure policy --------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadReading:
    backlog: int
    in_flight: int


@dataclass(frozen=True)
class OpsTarget:
    """The pool size an ops decision set, until `until` (the reader's clock)."""

    replicas: int
    until: float
    decision_id: str


class LoadGauge:
    """The scheduler's latest backlog and in-flight counts, from its MetricPoints.

    Times are the reader's own clock at receipt, so skew between hosts does not matter.
    """

    NAMES = ("backlog", "in_flight")

    def __init__(self, stale_after: float = STALE_AFTER_S) -> None:
        self.stale_after = stale_after
        self._values: dict[str, tuple[float, float]] = {}  # name -> (value, seen)
        self.ops: OpsTarget | None = None

    def observe_ops(self, event_type: str, decision: dict[str, Any], now: float,
                    wall_ms: int, hold_s: float = OPS_HOLD_S) -> bool:
        """Take one decoded devline.ops record; True when it was an acted `scale` decision
        (its target then holds for what is left of `hold_s` since it was made)."""
        params = decision.get("params") or {}
        if event_type != "OpsDecision" or decision.get("action") != "scale" \
                or params.get("acted") != "true":
            return False
        try:
            replicas = int(params["replicas"])
        except (KeyError, ValueError):
            return False
        age_s = max(wall_ms - int(decision.get("at") or 0), 0) / 1000
        self.ops = OpsTarget(replicas, now + hold_s - age_s, str(decision.get("decision_id")))
        return True

    def ops_target(self, now: float) -> OpsTarget | None:
        """The ops decision's target while it holds."""
        return self.ops if self.ops is not None and now < self.ops.until else None

    def observe(self, event_type: str, point: dict[str, Any], now: float) -> bool:
        """Take one decoded record; return True when it was a scheduler load point."""
        if event_type != "MetricPoint" or point.get("source") != "scheduler":
            return False
        name = point.get("name")
        if name not in self.NAMES:
            return False
        self._values[name] = (float(point["value"]), now)
        return True

    def reading(self, now: float) -> LoadReading | None:
        """Return the load, or None while either count is missing or stale."""
        got = [self._values.get(n) for n in self.NAMES]
        if any(v is None or now - v[1] > self.stale_after for v in got):
            return None
        backlog, in_flight = (max(int(v[0]), 0) for v in got if v is not None)
        return LoadReading(backlog, in_flight)


def autoscale_config(settings: Settings) -> AutoscaleConfig:
    return AutoscaleConfig(min_replicas=settings.min_workers, max_replicas=settings.max_workers,
                           target_per_worker=settings.scale_target,
                           tolerance=settings.scale_tolerance,
                           scale_down_window=settings.scale_down_window)


class PoolPolicy:
    """Load readings to pool sizes: the Autoscaler, holding still when readings stop."""

    def __init__(self, config: AutoscaleConfig) -> None:
        self.config = config
        self.autoscaler = Autoscaler(config)

    def decide(self, now: float, current: int, load: LoadReading | None,
               ops: OpsTarget | None = None) -> ScaleDecision:
        cfg = self.config
        if ops is not None:  # the ops agent's target, inside the hard bounds
            desired = min(cfg.max_replicas, max(cfg.min_replicas, ops.replicas))
            return ScaleDecision(current, desired, f"ops decision {ops.decision_id}: target "
                                 f"{ops.replicas} for {ops.until - now:.0f}s more", desired,
                                 now)
        if load is not None:
            return self.autoscaler.decide(now, current, load.backlog, load.in_flight)
        # Blind: no evidence to shrink on; only the hard bounds apply.
        desired = min(cfg.max_replicas, max(cfg.min_replicas, current))
        why = "no scheduler load reading: holding" if desired == current else (
            f"no scheduler load reading: back inside [{cfg.min_replicas}, {cfg.max_replicas}]")
        return ScaleDecision(current, desired, why, desired, now)


def pick_to_drain(workers: Sequence[Child], count: int) -> list[Child]:
    """Which workers to stop: ones waiting to restart first, then the most recently started.

    The newest worker is the least likely to hold long-running work.
    """
    candidates = [w for w in workers if not w.draining]
    candidates.sort(key=lambda w: (w.running, -w.started, -w.index))
    return candidates[:max(count, 0)]


def restart_pause(restarts: int) -> float:
    """Seconds to wait before restarting a child that crashed `restarts` times in a row:
    the first crash at once (a killed processor's partitions wait for it), then doubling."""
    if restarts <= 1:
        return 0.0
    return float(min(2 ** (restarts - 2), 30))


# -- edges --------------------------------------------------------------------------------
class MetricsLink:
    """Reads the scheduler's load from devline.metrics and publishes the pool's size."""

    def __init__(self, settings: Settings, gauge: LoadGauge, *, read: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from schemas.codec import Codec

        self.settings = settings
        self.clock = clock
        self.gauge = gauge
        self.codec = Codec.from_settings(settings)
        self.read = read
        self.labels = {"supervisor": f"{socket.gethostname()}-{os.getpid()}"}
        self._producer: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        from streams.emit import Emitter

        s = self.settings
        self._producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, linger_ms=5,
                                          **s.kafka_common())
        await self._producer.start()
        self.emit = Emitter(s, self.codec, self._producer.send)
        if self.read:
            self._reader = asyncio.create_task(self._read_forever())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._producer is not None:
            from streams.lifecycle import shut

            # Unsent points would wait for the broker up to the request timeout (40 s);
            # they are advisory, so a stop waits a few seconds for them at most.
            await shut(self._producer)

    async def publish(self, current: int, desired: int, draining: int) -> None:
        try:
            for name, value in (("replicas_current", current), ("replicas_desired", desired),
                                ("replicas_draining", draining)):
                await self.emit.metric("supervisor", name, value, **self.labels)
        except Exception as exc:  # metrics are advisory; the pool keeps running
            log.warning("could not publish pool metrics: %s", exc)

    async def _read_forever(self) -> None:
        while True:
            try:
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("metrics reader failed (%s); reconnecting in 2s", exc)
                await asyncio.sleep(2.0)

    async def _read(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from streams import topics as T
        from streams.client import topic_partitions
        from streams.lifecycle import running

        s = self.settings
        consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False,
                                    fetch_max_wait_ms=200, **s.kafka_common())
        async with running(consumer):
            ops = set(await topic_partitions(consumer, s.topic(T.OPS)))
            metrics = await topic_partitions(consumer, s.topic(T.METRICS))
            consumer.assign([*metrics, *ops])
            await consumer.seek_to_end(*metrics)  # only the present load matters
            # The last few decisions too: one made as this reader started still holds (an
            # older one's hold has run out by the time it is read).
            for tp, end in (await consumer.end_offsets(list(ops))).items():
                consumer.seek(tp, max(end - OPS_LOOKBACK, 0))
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    for record in records:
                        self._observe(record.value, ops=tp in ops)

    def _observe(self, value: bytes | None, ops: bool = False) -> None:
        from devline.errors import DecodeError

        try:
            event_type, point = self.codec.decode(value or b"")
        except DecodeError:
            return  # someone else's poison; the metrics pipeline dead-letters it
        if not ops:
            self.gauge.observe(event_type, point, self.clock())
        elif self.gauge.observe_ops(event_type, point, self.clock(), int(time.time() * 1000)):
            log.info("ops decision %s: worker target %s for %gs", point.get("decision_id"),
                     (point.get("params") or {}).get("replicas"), OPS_HOLD_S)
