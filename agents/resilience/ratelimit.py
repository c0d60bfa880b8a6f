"""AIMD concurrency limit for a rate-limited endpoint (HTTP 429).

Like TCP congestion control: each burst of 429s halves the number of concurrent calls
(never below `min_limit`), and every `limit` successes in a row without a 429 allow one
more. A Retry-After pauses all calls until the server said to come back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from devline.errors import ConfigError


@dataclass(frozen=True)
class AimdConfig:
    """Bounds and steps of the concurrency limit."""

    initial_limit: int = 4
    min_limit: int = 1
    max_limit: int = 32
    decrease_factor: float = 0.5
    increase_step: int = 1
    # Calls in flight together all see the same 429 wave; one decrease per interval keeps
    # one wave from collapsing the limit to the floor.
    decrease_interval: float = 1.0
    # A hostile or broken Retry-After must not stop calls for days.
    max_pause: float = 3600.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.initial_limit <= self.max_limit:
            raise ConfigError("limits must satisfy 1 <= min_limit <= initial_limit <= max_limit")
        if not 0 < self.decrease_factor < 1:
            raise ConfigError("decrease_factor must be in (0, 1)")
        if self.increase_step < 1:
            raise ConfigError("increase_step must be >= 1")
        for name in ("decrease_interval", "max_pause"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AimdConfig:
        """Build from `to_dict` output, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class LimitChange:
    """A change of the limit or of the pause, for events and metrics."""

    old: int
    new: int
    reason: str
    at: float
    paused_until: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return asdict(self)


class AimdLimiter:
    """Admits calls up to a limit that shrinks on 429s and grows back on successes."""

    def __init__(self, config: AimdConfig | None = None) -> None:
        self.config = config or AimdConfig()
        self._limit = self.config.initial_limit
        self._in_flight = 0
        self._successes = 0  # in a row since the last change or 429
        self._last_decrease: float | None = None
        self._paused_until: float | None = None

    @property
    def limit(self) -> int:
        """Return how many calls may run at once."""
        return self._limit

    @property
    def in_flight(self) -> int:
        """Return how many acquired calls have not been released."""
        return self._in_flight

    @property
    def paused_until(self) -> float | None:
        """Return when the latest Retry-After ends, if one was given."""
        return self._paused_until

    def wait_time(self, now: float) -> float:
        """Return seconds until a Retry-After pause ends (0 when not paused)."""
        if self._paused_until is None:
            return 0.0
        return max(0.0, self._paused_until - now)

    def acquire(self, now: float) -> bool:
        """Take a slot for one call; return False when paused or at the limit."""
        if self.wait_time(now) > 0 or self._in_flight >= self._limit:
            return False
        self._in_flight += 1
        return True

    def release(self) -> None:
        """Give back a slot taken by `acquire` (call it whatever the outcome)."""
        self._in_flight = max(0, self._in_flight - 1)

    def on_success(self, now: float) -> LimitChange | None:
        """Count a success; return the change when a full window of them raises the limit."""
        self._successes += 1
        # One window is `limit` successes: about one round of every slot succeeding.
        if self._successes < self._limit or self._limit >= self.config.max_limit:
            self._successes = min(self._successes, self._limit)
            return None
        old = self._limit
        self._limit = min(self.config.max_limit, old + self.config.increase_step)
        self._successes = 0
        return LimitChange(old, self._limit, f"{old} successes in a row", now,
                           self._paused_until)

    def on_rate_limited(self, now: float, retry_after: float | None = None) -> LimitChange | None:
        """Count a 429; return the change to the limit or pause, if any."""
        self._successes = 0
        paused = False
        if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
            resume = now + min(retry_after, self.config.max_pause)
            if self._paused_until is None or resume > self._paused_until:
                self._paused_until = resume
                paused = True
        old = self._limit
        recent = (self._last_decrease is not None
                  and now - self._last_decrease < self.config.decrease_interval)
        if not recent:
            self._limit = max(self.config.min_limit,
                              math.floor(old * self.config.decrease_factor))
            self._last_decrease = now
        if self._limit == old and not paused:
            return None
        reason = "rate limited" if self._limit != old else "rate limited, limit unchanged"
        if paused:
            reason += f", paused for {self.wait_time(now):g}s"
        return LimitChange(old, self._limit, reason, now, self._paused_until)

    def to_dict(self) -> dict[str, Any]:
        """Return the full state as a JSON-able dict."""
        return {
            "config": self.config.to_dict(),
            "limit": self._limit,
            "in_flight": self._in_flight,
            "successes": self._successes,
            "last_decrease": self._last_decrease,
            "paused_until": self._paused_until,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], config: AimdConfig | None = None) -> AimdLimiter:
        """Rebuild from `to_dict` output; a given `config` replaces the stored one.

        Slots held when the state was saved stay held: after a crash, call
        `reset_in_flight`, because the dead process's calls will never release them.
        """
        limiter = cls(config or AimdConfig.from_dict(data["config"]))
        cfg = limiter.config
        limiter._limit = min(cfg.max_limit, max(cfg.min_limit, int(data["limit"])))
        limiter._in_flight = int(data.get("in_flight", 0))
        limiter._successes = int(data.get("successes", 0))
        last, paused = data.get("last_decrease"), data.get("paused_until")
        limiter._last_decrease = None if last is None else float(last)
        limiter._paused_until = None if paused is None else float(paused)
        return limiter

    def reset_in_flight(self) -> None:
        """Forget slots held by calls that can no longer release them (after a restart)."""
        self._in_flight = 0
