"""Process supervisor: one stream processor and an autoscaled pool of worker processes.

The pool size follows the scheduler's load: the processor publishes `scheduler/backlog`
and `scheduler/in_flight` on `devline.metrics`; the supervisor reads them, asks the pure
`Autoscaler` for a size, starts workers or drains the newest ones (SIGTERM: a worker
finishes or hands back its task; SIGKILL only past its grace), and publishes
`supervisor/replicas_current` and `supervisor/replicas_desired` so KEDA/HPA could do the
same. Children that crash are restarted; workers that were drained are not. SIGTERM
drains every worker, then stops the processor, then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.resilience.autoscale import AutoscaleConfig, Autoscaler, ScaleDecision
from devline.settings import Settings

log = logging.getLogger("devline.supervisor")

TICK_S = 1.0  # the processor publishes its load once a second
STALE_AFTER_S = 10.0  # no load reading for this long: hold the pool as it is
STOP_MARGIN_S = 15.0  # beyond a worker's grace: commit, leave the group, close clients


def child_env(settings: Settings) -> dict[str, str]:
    """The parent's environment plus the settings, so children build the same Settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[Settings.env_name(name)] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Child:
    role: str
    index: int
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started: float = field(default_factory=time.monotonic)
    restart_at: float | None = None  # set while a crashed child waits out its pause
    drain_deadline: float | None = None  # set once the scaler asked it to stop

    @property
    def draining(self) -> bool:
        return self.drain_deadline is not None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


# -- pure policy --------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadReading:
    backlog: int
    in_flight: int


class LoadGauge:
    """The scheduler's latest backlog and in-flight counts, from its MetricPoints.

    Times are the reader's own clock at receipt, so skew between hosts does not matter.
    """

    NAMES = ("backlog", "in_flight")

    def __init__(self, stale_after: float = STALE_AFTER_S) -> None:
        self.stale_after = stale_after
        self._values: dict[str, tuple[float, float]] = {}  # name -> (value, seen)

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

    def decide(self, now: float, current: int, load: LoadReading | None) -> ScaleDecision:
        if load is not None:
            return self.autoscaler.decide(now, current, load.backlog, load.in_flight)
        cfg = self.config
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
    """Seconds to wait before restarting a child that crashed `restarts` times in a row."""
    return float(min(2 ** max(restarts - 1, 0), 30))


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
            await self._producer.stop()

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
        from streams.client import _partitions

        s = self.settings
        topic = s.topic(T.METRICS)
        consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False,
                                    fetch_max_wait_ms=200, **s.kafka_common())
        await consumer.start()
        try:
            tps = await _partitions(consumer, topic)
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)  # only the present load matters
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        self._observe(record.value)
        finally:
            await consumer.stop()

    def _observe(self, value: bytes | None) -> None:
        from devline.errors import DecodeError

        try:
            event_type, point = self.codec.decode(value or b"")
        except DecodeError:
            return  # someone else's poison; the metrics pipeline dead-letters it
        self.gauge.observe(event_type, point, self.clock())


class Supervisor:
    def __init__(self, settings: Settings, workers: int | None = None, *,
                 worker_args: list[str] | None = None, processor: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if workers is not None:  # a fixed-size pool
            settings = settings.updated(min_workers=workers, max_workers=workers)
        self.settings = settings
        self.clock = clock
        self.config = autoscale_config(settings)
        self.policy = PoolPolicy(self.config)
        self.gauge = LoadGauge()
        self.worker_args = worker_args or []
        self.with_processor = processor
        self.children: list[Child] = []
        self.stopping = asyncio.Event()
        self.decision: ScaleDecision | None = None
        self._env = child_env(settings)
        self._next_index = 0
        self._tag = f"{socket.gethostname()}-{os.getpid()}"
        self._blind = True  # until the processor's first load reading arrives

    @property
    def workers(self) -> list[Child]:
        return [c for c in self.children if c.role == "worker"]

    @property
    def active(self) -> list[Child]:
        """Workers the pool counts: running or due for restart, not draining."""
        return [c for c in self.workers if not c.draining]

    def argv(self, child: Child) -> list[str]:
        base = [sys.executable, "-m", "devline"]
        if child.role == "processor":
            return [*base, "processor"]
        # Host and supervisor pid keep ids unique when several supervisors share a group.
        return [*base, "worker", "--worker-id", f"{self._tag}-w{child.index}",
                *self.worker_args]

    async def spawn(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(*self.argv(child), env=self._env)
        child.started = self.clock()
        child.restart_at = None
        log.info("started %s-%d (pid %d)", child.role, child.index, child.proc.pid)

    async def add_worker(self) -> Child:
        child = Child("worker", self._next_index)
        self._next_index += 1
        self.children.append(child)
        await self.spawn(child)
        return child

    def drain(self, child: Child) -> None:
        """Ask a worker to stop taking work and exit once its tasks are done."""
        if not child.running:
            self.children.remove(child)  # crashed and waiting: simply not restarted
            log.info("worker-%d dropped before its restart", child.index)
            return
        child.drain_deadline = self.clock() + self.settings.worker_grace + STOP_MARGIN_S
        assert child.proc is not None
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)
        log.info("draining worker-%d (pid %d)", child.index, child.proc.pid)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        cfg = self.config
        if cfg.min_replicas == cfg.max_replicas:
            log.info("worker pool fixed at %d", cfg.max_replicas)
        else:
            log.info("worker pool %d..%d, target %g tasks per worker, scale-down window %gs",
                     cfg.min_replicas, cfg.max_replicas, cfg.target_per_worker,
                     cfg.scale_down_window)
        link = MetricsLink(self.settings, self.gauge,
                           read=cfg.min_replicas < cfg.max_replicas, clock=self.clock)
        await link.start()
        try:
            if self.with_processor:
                proc = Child("processor", 0)
                self.children.append(proc)
                await self.spawn(proc)
            for _ in range(cfg.min_replicas):
                await self.add_worker()
            while not self.stopping.is_set():
                self.reap()
                await self.restart_due()
                decision = await self.scale()
                await link.publish(decision.current, decision.desired,
                                   len(self.workers) - len(self.active))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), TICK_S)
            await self.shutdown()
            await link.publish(0, 0, 0)
        finally:
            await link.stop()
        log.info("stopped")
        return 0

    async def shutdown(self) -> None:
        log.info("stopping: draining %d worker(s)", len(self.workers))
        for child in self.workers:
            if child.running and not child.draining:
                self.drain(child)
        await asyncio.gather(*(self.wait_or_kill(c) for c in self.workers))
        for child in self.children:
            if child.role == "processor" and child.running:
                assert child.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
                child.drain_deadline = self.clock() + 60.0
                await self.wait_or_kill(child)

    async def wait_or_kill(self, child: Child) -> None:
        if child.proc is None:
            return
        timeout = max((child.drain_deadline or 0) - self.clock(), 0.0)
        try:
            await asyncio.wait_for(child.proc.wait(), timeout)
        except TimeoutError:
            self.kill(child)
            await child.proc.wait()

    def kill(self, child: Child) -> None:
        log.warning("%s-%d did not stop within its grace; killing", child.role, child.index)
        assert child.proc is not None
        with contextlib.suppress(ProcessLookupError):
            child.proc.kill()

    def reap(self) -> None:
        """Forget drained workers that exited; schedule restarts of children that crashed."""
        now = self.clock()
        for child in list(self.children):
            if child.proc is None:
                continue
            code = child.proc.returncode
            if code is None:
                if child.draining and now > (child.drain_deadline or now):
                    self.kill(child)
                continue
            uptime = now - child.started
            if child.draining:
                self.children.remove(child)
                level = logging.INFO if code == 0 else logging.WARNING
                log.log(level, "worker-%d drained and exited with %s after %.1fs",
                        child.index, code, uptime)
                continue
            child.restarts = child.restarts + 1 if uptime < 30 else 1
            pause = restart_pause(child.restarts)
            log.warning("%s-%d exited with %s after %.1fs; restarting in %gs", child.role,
                        child.index, code, uptime, pause)
            child.proc = None
            child.restart_at = now + pause

    async def restart_due(self) -> None:
        now = self.clock()
        for child in self.children:
            if child.proc is None and child.restart_at is not None and child.restart_at <= now:
                await self.spawn(child)

    async def scale(self) -> ScaleDecision:
        """Decide the pool size from the latest load, then start or drain workers."""
        now = self.clock()
        load = self.gauge.reading(now)
        if (load is None) != self._blind:
            self._blind = load is None
            if self._blind:
                log.warning("no scheduler load reading for %gs: holding the pool at %d",
                            self.gauge.stale_after, len(self.active))
            else:
                log.info("reading the scheduler's load")
        decision = self.policy.decide(now, len(self.active), load)
        self.decision = decision
        if decision.desired > decision.current:
            log.info("scale up %d -> %d: %s", decision.current, decision.desired,
                     decision.reason)
            for _ in range(decision.desired - decision.current):
                await self.add_worker()
        elif decision.desired < decision.current:
            log.info("scale down %d -> %d: %s", decision.current, decision.desired,
                     decision.reason)
            for child in pick_to_drain(self.active, decision.current - decision.desired):
                self.drain(child)
        else:
            log.debug("pool %d: %s", decision.current, decision.reason)
        return decision
