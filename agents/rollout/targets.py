"""Deploy targets: where a rollout's weights are applied (operator-configured, like executors).

A target takes `set_weight(Deployment)` and returns once the weight is live, or raises
DeployError. Every call is idempotent: the stage redoes a weight whose confirmation is
not in the log after a restart.

* `command`: an argv (no shell) with REVISION, WEIGHT, STABLE_REVISION, PLAN in its
  environment; exit 0 means done.
* `webhook`: HTTP POST of `{plan, revision, weight, stable_revision}`; 2xx means done.
* `simulated`: a real HTTP service on 127.0.0.1, one per plan, that routes `GET /` to the
  canary with probability weight/100 and fails with the revision's error rate (options
  `rollout.sim.<revision>.error_rate` / `.latency_ms`); it can drive its own traffic
  (`rollout.sim.rps`, default 50; 0 sends none, so the source has no data) and counts
  requests, errors and latencies per revision for the simulated metric source.
  `rollout.sim.<revision>.error_from_weight` (a percentage in [0, 100]) makes the error
  rate apply only while the canary's weight is at least that much: with `error_rate: 0.5`
  and `error_from_weight: 25`, the revision answers without errors at 10 % and fails half
  its requests from 25 % on (a fault that shows only under load). Absent, the error rate
  applies at every weight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from devline.errors import ConfigError, DevlineError

SIM_PREFIX = "rollout.sim."
STABLE_LABEL = "stable"  # the simulated service's name for "no stable revision known"
# Latencies kept per revision and window: enough for a p95 and the judge, bounded.
LATENCIES_MAX = 5000
OUTPUT_MAX = 2000


class DeployError(DevlineError):
    """A target could not apply a weight; the rollout fails the step (or the rollback)."""


@dataclass(frozen=True)
class Deployment:
    """What a target is asked to make live: `weight` % of the plan's traffic on `revision`."""

    plan: str
    revision: str
    weight: int
    stable_revision: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)


class DeployTarget(Protocol):
    """A configured deploy target."""

    name: str

    async def set_weight(self, deployment: Deployment) -> None:
        """Make the weight live (idempotent); raise DeployError when it cannot."""

    async def close(self) -> None:
        """Release what the target holds."""


def _env(d: Deployment) -> dict[str, str]:
    return {"PLAN": d.plan, "REVISION": d.revision, "WEIGHT": str(d.weight),
            "STABLE_REVISION": d.stable_revision or ""}


async def run_argv(argv: Sequence[str], env: Mapping[str, str], timeout_s: float
                   ) -> tuple[int, str, str]:
    """Run `argv` without a shell; return (exit code, stdout, stderr) or raise on timeout."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **env})
    except OSError as exc:
        raise DeployError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise DeployError(f"{argv[0]} timed out after {timeout_s:g}s") from exc
    return int(proc.returncode or 0), out.decode(errors="replace"), err.decode(errors="replace")


class CommandTarget:
    """Run an operator's program for every weight."""

    def __init__(self, name: str, argv: Sequence[str], timeout_s: float = 300.0) -> None:
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ConfigError(f"deploy target {name}: argv must be a non-empty list of strings")
        self.name, self.argv, self.timeout_s = name, list(argv), timeout_s

    async def set_weight(self, deployment: Deployment) -> None:
        code, out, err = await run_argv(self.argv, _env(deployment), self.timeout_s)
        if code != 0:
            tail = (err or out).strip()[-OUTPUT_MAX:]
            raise DeployError(f"{self.argv[0]} exited {code}" + (f": {tail}" if tail else ""))

    async def close(self) -> None:
        return None


class WebhookTarget:
    """POST every weight to an operator's endpoint."""

    def __init__(self, name: str, url: str, timeout_s: float = 30.0,
                 headers: Mapping[str, str] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"deploy target {name}: url must be http(s), got {url!r}")
        self.name, self.url, self.timeout_s = name, url, timeout_s
        self.headers = dict(headers or {})

    async def set_weight(self, deployment: Deployment) -> None:
        import aiohttp

        body = {"plan": deployment.plan, "revision": deployment.revision,
                "weight": deployment.weight, "stable_revision": deployment.stable_revision}
        try:
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session, \
                    session.post(self.url, json=body, headers=self.headers) as resp:
                text = await resp.text()
                if not 200 <= resp.status < 300:
                    raise DeployError(f"webhook {self.url} answered {resp.status}: "
                                      f"{text.strip()[:OUTPUT_MAX]}")
        except TimeoutError as exc:
            raise DeployError(f"webhook {self.url} timed out after {self.timeout_s:g}s") from exc
        except aiohttp.ClientError as exc:
            raise DeployError(f"webhook {self.url}: {exc}") from exc

    async def close(self) -> None:
        return None


@dataclass
class Behaviour:
    """How a simulated revision answers."""

    error_rate: float = 0.0
    latency_ms: float = 0.0
    # The error rate applies only while the canary weight is at least this (percent).
    error_from_weight: float = 0.0

    def errors_at(self, weight: int) -> float:
        """The error rate while the canary has `weight` % of the traffic."""
        return self.error_rate if weight >= self.error_from_weight else 0.0


@dataclass
class Counts:
    """Requests, errors and latencies (ms) of one revision in the current window."""

    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


def behaviours(options: Mapping[str, str]) -> tuple[dict[str, Behaviour], float]:
    """Read `rollout.sim.<revision>.error_rate|latency_ms|error_from_weight` and
    `rollout.sim.rps`."""
    found: dict[str, Behaviour] = {}
    rps = 50.0
    for key, raw in options.items():
        if not key.startswith(SIM_PREFIX):
            continue
        rest = key[len(SIM_PREFIX):]
        try:
            value = float(raw)
        except ValueError as exc:
            raise ConfigError(f"{key}: expected a number, got {raw!r}") from exc
        if rest == "rps":
            rps = value
            continue
        revision, _, what = rest.rpartition(".")
        b = found.setdefault(revision, Behaviour())
        if what == "error_rate" and 0 <= value <= 1:
            b.error_rate = value
        elif what == "latency_ms" and value >= 0:
            b.latency_ms = value
        elif what == "error_from_weight" and 0 <= value <= 100:
            b.error_from_weight = value
        else:
            raise ConfigError(f"{key}: expected error_rate in [0, 1], latency_ms >= 0 or "
                              "error_from_weight in [0, 100]")
    return found, rps


class SimulatedService:
    """A real HTTP service with a stable and a canary revision, and a traffic driver."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, seed: int | None = None) -> None:
        self.host, self.port = host, port
        self.behaviour: dict[str, Behaviour] = {}
        self.stable, self.canary, self.weight = STABLE_LABEL, STABLE_LABEL, 0
        self.counts: dict[str, Counts] = {}
        self.window_started = time.monotonic()
        self.rps = 0.0
        self._rng = random.Random(seed)  # traffic simulation, not security
        self._runner: Any = None
        self._driver: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/", self._serve)
        app.router.add_get("/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def set_weights(self, stable: str | None, canary: str, weight: int) -> None:
        """Route `weight` % to `canary`; a change of weight starts a new counting window."""
        stable = stable or STABLE_LABEL
        if (stable, canary, weight) != (self.stable, self.canary, self.weight):
            self.counts = {}
            self.window_started = time.monotonic()
        self.stable, self.canary, self.weight = stable, canary, weight

    def drive(self, rps: float) -> None:
        """Send `rps` requests per second to the service itself (0 stops)."""
        self.rps = rps
        if rps > 0 and self._driver is None:
            self._driver = asyncio.create_task(self._drive())

    def window(self) -> dict[str, Counts]:
        return self.counts

    async def _serve(self, request: Any) -> Any:
        from aiohttp import web

        canary = self.weight > 0 and self._rng.random() * 100 < self.weight
        revision = self.canary if canary else self.stable
        b = self.behaviour.get(revision, Behaviour())
        started = time.monotonic()
        if b.latency_ms:
            await asyncio.sleep(b.latency_ms / 1000)
        failed = self._rng.random() < b.errors_at(self.weight)
        c = self.counts.setdefault(revision, Counts())
        c.requests += 1
        c.errors += failed
        if len(c.latencies) < LATENCIES_MAX:
            c.latencies.append((time.monotonic() - started) * 1000)
        return web.Response(status=500 if failed else 200, text=revision,
                            headers={"X-Revision": revision})

    async def _stats(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"weight": self.weight, "canary": self.canary,
                                  "stable": self.stable, "counts": {
                                      r: {"requests": c.requests, "errors": c.errors}
                                      for r, c in self.counts.items()}})

    async def _drive(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            while self.rps > 0:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.url) as resp:
                        await resp.read()
                await asyncio.sleep(1 / self.rps)

    async def stop(self) -> None:
        self.rps = 0
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
            self._driver = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class SimulatedTarget:
    """Apply weights to a simulated service per plan (started on first use)."""

    def __init__(self, name: str, host: str = "127.0.0.1", seed: int | None = None) -> None:
        self.name, self.host, self.seed = name, host, seed
        self.services: dict[str, SimulatedService] = {}

    async def service(self, plan: str) -> SimulatedService:
        if plan not in self.services:
            svc = SimulatedService(self.host, seed=self.seed)
            await svc.start()
            self.services[plan] = svc
        return self.services[plan]

    async def set_weight(self, deployment: Deployment) -> None:
        svc = await self.service(deployment.plan)
        found, rps = behaviours(deployment.options)
        svc.behaviour = found
        svc.set_weights(deployment.stable_revision, deployment.revision, deployment.weight)
        svc.drive(rps)

    async def close(self) -> None:
        for svc in self.services.values():
            await svc.stop()
        self.services.clear()


def build_target(name: str, config: Mapping[str, Any]) -> DeployTarget:
    """Build the target `name` from its operator config (`type` and its fields)."""
    kind = config.get("type", name)
    timeout = float(config.get("timeout_s", 300.0 if kind == "command" else 30.0))
    match kind:
        case "command":
            return CommandTarget(name, list(config.get("argv") or []), timeout)
        case "webhook":
            return WebhookTarget(name, str(config.get("url", "")), timeout,
                                 config.get("headers"))
        case "simulated":
            seed = config.get("seed")
            return SimulatedTarget(name, str(config.get("host", "127.0.0.1")),
                                   None if seed is None else int(seed))
        case _:
            raise ConfigError(f"deploy target {name}: unknown type {kind!r} "
                              "(command, webhook, simulated)")
