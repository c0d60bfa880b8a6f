"""Autoscaling policy for the worker pool, in the manner of the Kubernetes HPA.

The raw recommendation is `ceil((backlog + in_flight) / target_per_worker)`, clamped to
[min_replicas, max_replicas]. Scaling up happens at once (optionally a bounded step at a
time), because queued work costs latency now. Scaling down uses the highest
recommendation of the last `scale_down_window` seconds, so a brief lull does not stop
workers that the next burst needs. A tolerance band around the current size absorbs noise.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any

from devline.errors import ConfigError


@dataclass(frozen=True)
class AutoscaleConfig:
    """Bounds and damping of the worker pool size."""

    min_replicas: int = 2
    max_replicas: int = 10
    target_per_worker: float = 1.0
    tolerance: float = 0.1
    scale_down_window: float = 300.0
    max_scale_up_step: int | None = None
    max_scale_down_step: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ConfigError("replicas must satisfy 0 <= min_replicas <= max_replicas, max >= 1")
        if not math.isfinite(self.target_per_worker) or self.target_per_worker <= 0:
            raise ConfigError("target_per_worker must be a finite number > 0")
        if not 0 <= self.tolerance < 1:
            raise ConfigError("tolerance must be in [0, 1)")
        if not math.isfinite(self.scale_down_window) or self.scale_down_window < 0:
            raise ConfigError("scale_down_window must be a finite number >= 0")
        for step in (self.max_scale_up_step, self.max_scale_down_step):
            if step is not None and step < 1:
                raise ConfigError("scale steps must be >= 1 when set")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoscaleConfig:
        """Build from `to_dict` output, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ScaleDecision:
    """How many workers to run, and why. `recommended` is the undamped figure."""

    current: int
    desired: int
    reason: str
    recommended: int = 0
    at: float = 0.0

    @property
    def changed(self) -> bool:
        """Return True when the pool should grow or shrink."""
        return self.desired != self.current

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (the desired count is also published as a metric)."""
        return asdict(self)


class Autoscaler:
    """Turns load observations into pool sizes; remembers recent recommendations."""

    def __init__(self, config: AutoscaleConfig | None = None) -> None:
        self.config = config or AutoscaleConfig()
        # (time, recommendation) with strictly decreasing recommendations, oldest first:
        # the front is the window's maximum. An older entry no higher than a newer one can
        # never be the maximum again, so it is dropped; at most max - min + 1 entries remain.
        self._history: deque[tuple[float, int]] = deque()
        self._last_now: float | None = None

    def recommend(self, backlog: int, in_flight: int) -> int:
        """Return the clamped size the load asks for, with no damping."""
        cfg = self.config
        load = backlog + in_flight
        # Rounding first keeps 3.0000000001 workers from becoming 4.
        raw = math.ceil(round(load / cfg.target_per_worker, 9))
        return min(cfg.max_replicas, max(cfg.min_replicas, raw))

    def decide(self, now: float, current: int, backlog: int, in_flight: int) -> ScaleDecision:
        """Return the pool size to run now, given the current size and the load."""
        if min(current, backlog, in_flight) < 0:
            raise ValueError("current, backlog and in_flight must be >= 0")
        if math.isnan(now):
            raise ValueError("now must be a number")
        if self._last_now is not None:
            now = max(now, self._last_now)  # a stepped-back clock must not revive old entries
        self._last_now = now
        cfg = self.config
        load = backlog + in_flight
        raw = self.recommend(backlog, in_flight)

        if not self._history:
            # No evidence about the last window: treat the present size as wanted, so a
            # fresh start waits a full window before shrinking the pool.
            self._push(now, min(cfg.max_replicas, max(cfg.min_replicas, current)))
        if current < cfg.min_replicas or current > cfg.max_replicas:
            # The bounds are hard limits: no tolerance band, step or window applies.
            self._push(now, raw)
            desired = raw if current < cfg.min_replicas else cfg.max_replicas
            return ScaleDecision(current, desired, f"outside [{cfg.min_replicas}, "
                                 f"{cfg.max_replicas}]: load {load} wants {raw}", raw, now)

        capacity = current * cfg.target_per_worker
        # Compared as a product so that 11 against 10 is exactly 10%, not 10.0000001%.
        if capacity > 0 and abs(load - capacity) <= cfg.tolerance * capacity + 1e-9:
            self._push(now, current)
            return ScaleDecision(current, current, f"load {load} within "
                                 f"{cfg.tolerance:.0%} of capacity {capacity:g}", raw, now)
        self._push(now, raw)

        if raw > current:
            step = cfg.max_scale_up_step
            desired = raw if step is None else min(raw, current + step)
            return ScaleDecision(current, desired, f"scale up: load {load} wants {raw}",
                                 raw, now)
        if raw == current:
            return ScaleDecision(current, current, f"steady: load {load} fits {current}",
                                 raw, now)
        held = self._window_max(now)
        target = min(current, held)
        if target == current:
            return ScaleDecision(current, current, f"hold: {held} wanted within the last "
                                 f"{cfg.scale_down_window:g}s", raw, now)
        step = cfg.max_scale_down_step
        desired = target if step is None else max(target, current - step)
        return ScaleDecision(current, desired, f"scale down: load {load} wants {raw}, "
                             f"at most {held} wanted within the window", raw, now)

    def _push(self, now: float, recommendation: int) -> None:
        while self._history and self._history[-1][1] <= recommendation:
            self._history.pop()
        self._history.append((now, recommendation))
        self._prune(now)

    def _prune(self, now: float) -> None:
        # Keep the newest entry always: it is the recommendation just made.
        while len(self._history) > 1 and self._history[0][0] <= now - self.config.scale_down_window:
            self._history.popleft()

    def _window_max(self, now: float) -> int:
        self._prune(now)
        return self._history[0][1]

    def to_dict(self) -> dict[str, Any]:
        """Return the full state as a JSON-able dict."""
        return {
            "config": self.config.to_dict(),
            "history": [[t, r] for t, r in self._history],
            "last_now": self._last_now,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], config: AutoscaleConfig | None = None) -> Autoscaler:
        """Rebuild from `to_dict` output; a given `config` replaces the stored one."""
        scaler = cls(config or AutoscaleConfig.from_dict(data["config"]))
        for t, r in data.get("history", []):
            scaler._push(float(t), int(r))
        last_now = data.get("last_now")
        scaler._last_now = None if last_now is None else float(last_now)
        return scaler
