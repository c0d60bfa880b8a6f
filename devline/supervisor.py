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

from agents.resilience.autoscale import ScaleDecision
from devline.scaling import (
    TICK_S,
    LoadGauge,
    MetricsLink,
    PoolPolicy,
    autoscale_config,
    pick_to_drain,
    restart_pause,
)
from devline.settings import Settings

log = logging.getLogger("devline.supervisor")

STOP_MARGIN_S = 15.0  # beyond a worker's grace: commit, leave the group, close clients
OTHERS_GRACE_S = 30.0  # for every other child to stop after SIGTERM (1-3 s with a broker)
SPARE_DELAY_S = 2.0  # a processor's spare is started this long after the processor


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
    # A processor's warm spare: imported and built, waiting on stdin to start. Promoting
    # it skips interpreter start-up and imports (seconds on a busy machine) on failover.
    spare: asyncio.subprocess.Process | None = None

    @property
    def draining(self) -> bool:
        return self.drain_deadline is not None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class Supervisor:
    def __init__(self, settings: Settings, workers: int | None = None, *,
                 worker_args: list[str] | None = None, processor: bool = True,
                 sink: bool = True, spares: bool = True,
                 stages: Sequence[tuple[str, Sequence[str]]] = (),
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
        self.wake = asyncio.Event()
        self.with_sink = sink
        self.spares = spares
        self._tasks: set[asyncio.Task[Any]] = set()
        # Further stages run as one process each (read side, rollouts, ops agent):
        # (role, `devline` arguments), restarted like the processor when they die.
        self.stages = {role: list(args) for role, args in stages}

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
        if child.role == "sink":
            return [*base, "sink"]
        if child.role == "tester":
            return [*base, "tester", "--tester-id", f"{self._tag}-t{child.index}"]
        if child.role in self.stages:
            return [*base, *self.stages[child.role]]
        # Host and supervisor pid keep ids unique when several supervisors share a group.
        return [*base, "worker", "--worker-id", f"{self._tag}-w{child.index}",
                *self.worker_args]

    def env_for(self, child: Child) -> dict[str, str]:
        if child.role != "processor" or self.settings.instance_id:
            return self._env
        # Static membership: a restarted processor is the same group member and takes its
        # partitions back at once, instead of after the dead one's session times out.
        return {**self._env, Settings.env_name("instance_id"):
                f"{socket.gethostname()}-processor-{child.index}"}

    async def spawn(self, child: Child) -> None:
        spare = child.spare
        if spare is not None and spare.returncode is None and spare.stdin is not None:
            spare.stdin.write(b"start\n")
            with contextlib.suppress(ConnectionError):
                await spare.stdin.drain()
            child.proc, child.spare = spare, None
            how = "promoted its warm spare"
        else:
            child.proc = await asyncio.create_subprocess_exec(*self.argv(child),
                                                              env=self.env_for(child))
            how = "started"
        child.started = self.clock()
        child.restart_at = None
        log.info("%s %s-%d (pid %d)", how, child.role, child.index, child.proc.pid)
        self._background(self._watch(child.proc))
        if child.role == "processor" and self.spares:
            self._background(self._prepare_spare(child))

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def _prepare_spare(self, child: Child) -> None:
        """Start the next spare once the processor is up (not competing with its start)."""
        await asyncio.sleep(max(SPARE_DELAY_S, restart_pause(child.restarts)))
        if self.stopping.is_set() or child.spare is not None:
            return
        spare = child.spare = await asyncio.create_subprocess_exec(
            *self.argv(child), "--standby", env=self.env_for(child),
            stdin=asyncio.subprocess.PIPE)
        log.debug("processor-%d spare ready to start (pid %d)", child.index, spare.pid)
        code = await spare.wait()
        if child.spare is spare and not self.stopping.is_set():  # died before it was needed
            child.spare = None
            log.warning("processor-%d spare exited with %s; preparing another", child.index,
                        code)
            await self._prepare_spare(child)

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        self.wake.set()  # reap and restart now, not at the next tick

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
            for index in range(self.settings.processors if self.with_processor else 0):
                proc = Child("processor", index)
                self.children.append(proc)
                await self.spawn(proc)
            if self.with_sink:
                sink = Child("sink", 0)
                self.children.append(sink)
                await self.spawn(sink)
            for index in range(self.settings.test_workers if self.with_processor else 0):
                tester = Child("tester", index)
                self.children.append(tester)
                await self.spawn(tester)
            for role in self.stages:
                stage = Child(role, 0)
                self.children.append(stage)
                await self.spawn(stage)
            for _ in range(cfg.min_replicas):
                await self.add_worker()
            while not self.stopping.is_set():
                self.reap()
                await self.restart_due()
                decision = await self.scale()
                await link.publish(decision.current, decision.desired,
                                   len(self.workers) - len(self.active))
                waits = [asyncio.ensure_future(e.wait()) for e in (self.stopping, self.wake)]
                await asyncio.wait(waits, timeout=TICK_S, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
                self.wake.clear()
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
        # The others (processor, sink, testers, read side, rollout stage) stop together:
        # one after another, each waiting out its grace with the broker gone, took minutes.
        stopping = []
        for child in self.children:
            if child.spare is not None and child.spare.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.spare.kill()
            if child.role != "worker" and child.running:
                assert child.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
                child.drain_deadline = self.clock() + OTHERS_GRACE_S
                stopping.append(child)
        await asyncio.gather(*(self.wait_or_kill(c) for c in stopping))

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
            warm = child.spare is not None and child.spare.returncode is None
            pause = 0.0 if warm else restart_pause(child.restarts)
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
        decision = self.policy.decide(now, len(self.active), load, self.gauge.ops_target(now))
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
