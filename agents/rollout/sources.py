"""Metric sources: where a bake's measurements come from (operator-configured plug-ins).

`measure(metric, ctx)` returns a Measurement; no data is `Measurement(value=None)`
(inconclusive, never success) and a source that cannot answer returns one with `error`.
`samples(metric, ctx)` returns `{"canary": [...], "stable": [...]}` for the judge.

* `simulated`: the simulated deploy target's counters for the current step's window:
  `error_rate` (errors/requests) and `latency_p95` (ms), samples = canary requests.
* `prometheus`: the HTTP query API (`/api/v1/query`) with a PromQL template per metric;
  `$revision`, `$stable_revision`, `$plan`, `$weight` are substituted.
* `command`: an argv (no shell) printing `{"value": ..., "samples": ...}` (or, with
  MODE=compare, `{"canary": [...], "stable": [...]}`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from string import Template
from typing import Any, Protocol

from agents.rollout.analysis import Measurement
from agents.rollout.targets import (
    STABLE_LABEL,
    DeployError,
    DeployTarget,
    SimulatedTarget,
    run_argv,
)
from devline.errors import ConfigError, DevlineError


class MetricError(DevlineError):
    """A source could not answer (the measurement carries the error)."""


@dataclass(frozen=True)
class MeasureContext:
    """What is being measured: the plan's canary at `weight` % against its stable."""

    plan: str
    revision: str
    stable_revision: str | None
    weight: int
    options: Mapping[str, str] = field(default_factory=dict)

    def variables(self) -> dict[str, str]:
        return {"plan": self.plan, "revision": self.revision,
                "stable_revision": self.stable_revision or "", "weight": str(self.weight)}


class MetricSource(Protocol):
    """A configured metric source."""

    name: str

    async def measure(self, metric: str, ctx: MeasureContext) -> Measurement:
        """One reading of `metric` for the canary."""

    async def samples(self, metric: str, ctx: MeasureContext) -> dict[str, list[float]]:
        """Canary and stable samples of `metric` for the judge."""


def p95(values: Sequence[float]) -> float | None:
    """Nearest-rank 95th percentile; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class SimulatedSource:
    """Read the simulated service's counters (error_rate, latency_p95)."""

    METRICS = ("error_rate", "latency_p95")

    def __init__(self, name: str, target: SimulatedTarget) -> None:
        self.name, self.target = name, target

    async def measure(self, metric: str, ctx: MeasureContext) -> Measurement:
        svc = self.target.services.get(ctx.plan)
        if metric not in self.METRICS:
            return Measurement(None, 0, f"simulated source has no metric {metric!r}")
        counts = svc.window().get(ctx.revision) if svc is not None else None
        if counts is None or counts.requests == 0:
            return Measurement(None, 0)  # no traffic on the canary: no data
        if metric == "error_rate":
            return Measurement(counts.errors / counts.requests, counts.requests)
        return Measurement(p95(counts.latencies), counts.requests)

    async def samples(self, metric: str, ctx: MeasureContext) -> dict[str, list[float]]:
        svc = self.target.services.get(ctx.plan)
        if svc is None:
            return {"canary": [], "stable": []}
        out: dict[str, list[float]] = {}
        for side, revision in (("canary", ctx.revision),
                               ("stable", ctx.stable_revision or STABLE_LABEL)):
            c = svc.window().get(revision)
            if c is None:
                out[side] = []
            elif metric == "error_rate":
                # One sample per request: 1 failed, 0 served.
                out[side] = [1.0] * c.errors + [0.0] * (c.requests - c.errors)
            else:
                out[side] = list(c.latencies)
        return out


class PrometheusSource:
    """Instant queries against a Prometheus-compatible `/api/v1/query`."""

    def __init__(self, name: str, url: str, queries: Mapping[str, Any],
                 timeout_s: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"metric source {name}: url must be http(s), got {url!r}")
        self.name, self.url, self.timeout_s = name, url.rstrip("/"), timeout_s
        self.queries: dict[str, dict[str, str]] = {}
        for metric, q in queries.items():
            entry = {"query": q} if isinstance(q, str) else dict(q)
            if not isinstance(entry.get("query"), str):
                raise ConfigError(f"metric source {name}: {metric} needs a query")
            self.queries[str(metric)] = entry

    async def query(self, promql: str) -> list[float]:
        """The values of an instant vector (or scalar) result; raise MetricError on errors."""
        import aiohttp

        try:
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session, \
                    session.get(f"{self.url}/api/v1/query", params={"query": promql}) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise MetricError(f"prometheus {self.url}: {exc or type(exc).__name__}") from exc
        if not isinstance(body, Mapping) or body.get("status") != "success":
            why = body.get("error") if isinstance(body, Mapping) else body
            raise MetricError(f"prometheus {self.url}: query failed: {why}")
        data = body.get("data") or {}
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar" and isinstance(result, list):
            return [float(result[1])]
        if kind == "vector" and isinstance(result, list):
            return [float(item["value"][1]) for item in result]
        raise MetricError(f"prometheus {self.url}: unexpected result type {kind!r}")

    def _render(self, template: str, ctx: MeasureContext, **extra: str) -> str:
        return Template(template).safe_substitute({**ctx.variables(), **extra})

    async def measure(self, metric: str, ctx: MeasureContext) -> Measurement:
        entry = self.queries.get(metric)
        if entry is None:
            return Measurement(None, 0, f"no query for metric {metric!r}")
        try:
            values = [v for v in await self.query(self._render(entry["query"], ctx))
                      if math.isfinite(v)]
            samples = len(values)
            if values and "samples" in entry:
                counted = await self.query(self._render(entry["samples"], ctx))
                samples = int(counted[0]) if counted and math.isfinite(counted[0]) else 0
        except (MetricError, DeployError) as exc:
            return Measurement(None, 0, str(exc))
        if not values:
            return Measurement(None, 0)  # empty vector: no data
        return Measurement(values[0], samples)

    async def samples(self, metric: str, ctx: MeasureContext) -> dict[str, list[float]]:
        entry = self.queries.get(metric)
        if entry is None:
            return {"canary": [], "stable": []}
        template = entry.get("compare", entry["query"])
        out: dict[str, list[float]] = {}
        for side, revision in (("canary", ctx.revision), ("stable", ctx.stable_revision or "")):
            try:
                out[side] = await self.query(self._render(template, ctx, revision=revision))
            except (MetricError, DeployError):
                out[side] = []
        return out


class CommandSource:
    """An operator's program measures (METRIC, PLAN, REVISION, ... in its environment)."""

    def __init__(self, name: str, argv: Sequence[str], timeout_s: float = 60.0) -> None:
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ConfigError(f"metric source {name}: argv must be a non-empty list of strings")
        self.name, self.argv, self.timeout_s = name, list(argv), timeout_s

    async def _run(self, metric: str, ctx: MeasureContext, mode: str) -> Any:
        env = {k.upper(): v for k, v in ctx.variables().items()}
        code, out, err = await run_argv(self.argv, {**env, "METRIC": metric, "MODE": mode},
                                        self.timeout_s)
        if code != 0:
            raise MetricError(f"{self.argv[0]} exited {code}: {(err or out).strip()[-500:]}")
        try:
            return json.loads(out)
        except ValueError as exc:
            raise MetricError(f"{self.argv[0]} did not print JSON: {out.strip()[:200]!r}") \
                from exc

    async def measure(self, metric: str, ctx: MeasureContext) -> Measurement:
        try:
            data = await self._run(metric, ctx, "measure")
            if not isinstance(data, Mapping):
                raise MetricError(f"{self.argv[0]} printed {type(data).__name__}, not an object")
            value = data.get("value")
            return Measurement(None if value is None else float(value),
                               int(data.get("samples") or 0))
        except (MetricError, DeployError, TypeError, ValueError) as exc:
            return Measurement(None, 0, str(exc))

    async def samples(self, metric: str, ctx: MeasureContext) -> dict[str, list[float]]:
        try:
            data = await self._run(metric, ctx, "compare")
            return {side: [float(v) for v in data.get(side) or []]
                    for side in ("canary", "stable")}
        except (MetricError, DeployError, TypeError, ValueError, AttributeError):
            return {"canary": [], "stable": []}


def build_source(name: str, config: Mapping[str, Any],
                 targets: Mapping[str, DeployTarget]) -> MetricSource:
    """Build the source `name` from its operator config (`type` and its fields)."""
    kind = config.get("type", name)
    match kind:
        case "simulated":
            wanted = config.get("target")
            sims = [t for n, t in targets.items() if isinstance(t, SimulatedTarget)
                    and (wanted is None or n == wanted)]
            if not sims:
                raise ConfigError(f"metric source {name}: no simulated deploy target "
                                  f"{wanted or ''} to read".replace("  ", " "))
            return SimulatedSource(name, sims[0])
        case "prometheus":
            return PrometheusSource(name, str(config.get("url", "")),
                                    config.get("queries") or {},
                                    float(config.get("timeout_s", 10.0)))
        case "command":
            return CommandSource(name, list(config.get("argv") or []),
                                 float(config.get("timeout_s", 60.0)))
        case _:
            raise ConfigError(f"metric source {name}: unknown type {kind!r} "
                              "(simulated, prometheus, command)")
