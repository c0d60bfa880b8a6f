"""Process supervisor: one stream processor and a pool of worker processes.

Children are restarted when they crash. SIGTERM drains workers first (they finish or hand
back their task), then stops the processor, then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from devline.settings import Settings

log = logging.getLogger("devline.supervisor")


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


class Supervisor:
    def __init__(self, settings: Settings, workers: int, *, worker_args: list[str] | None = None,
                 processor: bool = True) -> None:
        self.settings = settings
        self.want_workers = workers
        self.worker_args = worker_args or []
        self.with_processor = processor
        self.children: list[Child] = []
        self.stopping = asyncio.Event()
        self._env = child_env(settings)
        self._next_index = 0

    def argv(self, child: Child) -> list[str]:
        base = [sys.executable, "-m", "devline"]
        if child.role == "processor":
            return [*base, "processor"]
        return [*base, "worker", "--worker-id", f"worker-{child.index}", *self.worker_args]

    async def spawn(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(*self.argv(child), env=self._env)
        child.started = time.monotonic()
        log.info("started %s-%d (pid %d)", child.role, child.index, child.proc.pid)

    async def add_worker(self) -> Child:
        child = Child("worker", self._next_index)
        self._next_index += 1
        self.children.append(child)
        await self.spawn(child)
        return child

    async def stop_child(self, child: Child, timeout: float = 60.0) -> None:
        if child.proc is None or child.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.proc.wait(), timeout)
        except TimeoutError:
            log.warning("%s-%d did not stop in %.0fs; killing", child.role, child.index, timeout)
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            await child.proc.wait()

    @property
    def workers(self) -> list[Child]:
        return [c for c in self.children if c.role == "worker"]

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        if self.with_processor:
            proc = Child("processor", 0)
            self.children.append(proc)
            await self.spawn(proc)
        for _ in range(self.want_workers):
            await self.add_worker()
        while not self.stopping.is_set():
            await self.watch()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.5)
        log.info("stopping: draining %d worker(s)", len(self.workers))
        await asyncio.gather(*(self.stop_child(c) for c in self.workers))
        for child in self.children:
            if child.role == "processor":
                await self.stop_child(child)
        log.info("stopped")
        return 0

    async def watch(self) -> None:
        """Restart children that exited, with a growing pause for ones that keep crashing."""
        for child in self.children:
            if child.proc is None or child.proc.returncode is None:
                continue
            uptime = time.monotonic() - child.started
            child.restarts = child.restarts + 1 if uptime < 30 else 1
            pause = min(2 ** (child.restarts - 1), 30)
            log.warning("%s-%d exited with %s after %.1fs; restarting in %ss", child.role,
                        child.index, child.proc.returncode, uptime, pause)
            child.proc = None
            await asyncio.sleep(pause)
            if not self.stopping.is_set():
                await self.spawn(child)
