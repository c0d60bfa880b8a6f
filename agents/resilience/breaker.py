"""Circuit breaker state machine for one executor or deploy target.

CLOSED counts outcomes in a sliding window and opens when at least `minimum_calls` calls
fail at a rate strictly above `failure_rate_threshold`. OPEN refuses everything until
`open_duration` has passed, then turns HALF_OPEN. HALF_OPEN hands out at most
`half_open_probes` probe permits; it closes if the probes' failure rate (out of all
`half_open_probes`) is at most the threshold and reopens otherwise, deciding as soon as
the remaining probes can no longer change the answer. A probe that has not reported after
`probe_timeout` counts as failed, so a hung call cannot keep the breaker half-open.

Time only moves through the `now` arguments. The state is stored in a table, so it goes
to and from plain dicts, and every transition comes back as a `Transition` record for the
caller to publish (returned by `record`/`tick`/`cancel`, and kept until `drain`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any, Literal

from agents.resilience.window import CountWindow, TimeWindow, window_from_dict
from devline.errors import ConfigError

# Undrained transitions kept at most; the state is stored, so a caller that never drains
# must not grow it without end.
MAX_PENDING = 64


class BreakerState(StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """How a breaker decides. Validated on construction."""

    failure_rate_threshold: float = 0.5
    minimum_calls: int = 5
    window: Literal["count", "time"] = "count"
    window_size: int = 20
    window_seconds: float = 60.0
    bucket_seconds: float = 1.0
    open_duration: float = 30.0
    half_open_probes: int = 3
    # LLM calls can take minutes; a shorter timeout would fail healthy probes.
    probe_timeout: float = 600.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_rate_threshold < 1.0:
            raise ConfigError("failure_rate_threshold must be in [0, 1)")
        if self.minimum_calls < 1 or self.window_size < 1 or self.half_open_probes < 1:
            raise ConfigError("minimum_calls, window_size and half_open_probes must be >= 1")
        if self.window not in ("count", "time"):
            raise ConfigError(f"window must be 'count' or 'time', got {self.window!r}")
        for name in ("window_seconds", "bucket_seconds", "open_duration", "probe_timeout"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        if self.bucket_seconds > self.window_seconds:
            raise ConfigError("bucket_seconds must not exceed window_seconds")

    def new_window(self) -> CountWindow | TimeWindow:
        """Return an empty window of the configured kind."""
        if self.window == "count":
            return CountWindow(self.window_size)
        return TimeWindow(self.window_seconds, self.bucket_seconds)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BreakerConfig:
        """Build from `to_dict` output, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Permit:
    """Leave to make one call. A probe permit must come back with its outcome.

    `generation` names the breaker era that issued it: an outcome only counts in that era,
    so a slow call started before the breaker opened cannot sway the probes that follow.
    """

    breaker: str
    probe: bool
    generation: int
    seq: int
    issued_at: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (a probe permit can travel in the dispatch event)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Permit:
        """Build from `to_dict` output."""
        return cls(str(data["breaker"]), bool(data["probe"]), int(data["generation"]),
                   int(data["seq"]), float(data["issued_at"]))


@dataclass(frozen=True)
class Transition:
    """One change of breaker state, for events and metrics."""

    breaker: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    error_rate: float
    calls: int
    at: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        data = asdict(self)
        data["from_state"], data["to_state"] = self.from_state.value, self.to_state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transition:
        """Build from `to_dict` output."""
        return cls(str(data["breaker"]), BreakerState(data["from_state"]),
                   BreakerState(data["to_state"]), str(data["reason"]),
                   float(data["error_rate"]), int(data["calls"]), float(data["at"]))


class CircuitBreaker:
    """The breaker for one named executor or target."""

    def __init__(self, name: str, config: BreakerConfig | None = None) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._state = BreakerState.CLOSED
        # Bumped on every transition; permits from an older era are stale.
        self._generation = 0
        self._window = self.config.new_window()
        self._open_until: float | None = None
        self._probes: dict[int, float] = {}  # outstanding probe seq -> issued_at
        self._issued = 0  # probes handed out this era, less cancelled ones
        self._next_seq = 0  # numbers are never reused within an era, even after a cancel
        self._probe_ok = 0
        self._probe_failed = 0
        self._last_now: float | None = None
        self._pending: list[Transition] = []

    # -- what the caller reads ---------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """Return the state as of the last call; `tick` first to apply elapsed time."""
        return self._state

    @property
    def open_until(self) -> float | None:
        """Return when the cool-down ends, while OPEN."""
        return self._open_until

    @property
    def outstanding_probes(self) -> int:
        """Return how many probe permits have not reported yet."""
        return len(self._probes)

    def window_totals(self, now: float) -> tuple[int, int]:
        """Return (calls, failures) in the CLOSED-state window at `now`."""
        return self._window.totals(self._clamp(now))

    def drain(self) -> list[Transition]:
        """Return and forget the transitions not drained yet, oldest first."""
        out, self._pending = self._pending, []
        return out

    # -- what the caller does ----------------------------------------------------------

    def allow(self, now: float) -> Permit | None:
        """Return a permit to make a call, or None when the breaker refuses it."""
        now = self._clamp(now)
        self._advance(now)
        if self._state is BreakerState.CLOSED:
            return Permit(self.name, False, self._generation, 0, now)
        if self._state is BreakerState.HALF_OPEN and self._issued < self.config.half_open_probes:
            seq = self._next_seq
            self._next_seq += 1
            self._issued += 1
            self._probes[seq] = now
            return Permit(self.name, True, self._generation, seq, now)
        return None

    def record_success(self, now: float, permit: Permit | None = None) -> list[Transition]:
        """Report a call that worked; return the transitions it caused."""
        return self.record(now, False, permit)

    def record_failure(self, now: float, permit: Permit | None = None) -> list[Transition]:
        """Report a call that failed; return the transitions it caused."""
        return self.record(now, True, permit)

    def record(self, now: float, failed: bool, permit: Permit | None = None) -> list[Transition]:
        """Report one call outcome; return the transitions it caused.

        Outcomes count only in the era that issued their permit, and each probe counts
        once, so duplicate or late reports (at-least-once delivery) are no-ops. Without a
        permit, HALF_OPEN credits the oldest outstanding probe.
        """
        if permit is not None and permit.breaker != self.name:
            raise ValueError(f"permit for breaker {permit.breaker!r} reported to {self.name!r}")
        now = self._clamp(now)
        mark = len(self._pending)
        self._advance(now)
        if permit is not None and permit.generation != self._generation:
            return self._pending[mark:]
        if self._state is BreakerState.CLOSED:
            self._window.add(now, failed)
            self._check_window(now)
        elif self._state is BreakerState.HALF_OPEN:
            seq = permit.seq if permit is not None else (min(self._probes)
                                                          if self._probes else None)
            if seq is not None and seq in self._probes:
                del self._probes[seq]
                self._probe_outcome(now, failed, "probe failed" if failed else "")
        return self._pending[mark:]

    def cancel(self, now: float, permit: Permit) -> list[Transition]:
        """Hand back an unused probe permit (the call was never made); return transitions.

        Without this an unused probe would hold its slot until `probe_timeout` and then
        count as a failure.
        """
        now = self._clamp(now)
        mark = len(self._pending)
        self._advance(now)
        if (permit.probe and permit.breaker == self.name
                and permit.generation == self._generation and permit.seq in self._probes):
            del self._probes[permit.seq]
            self._issued -= 1
        return self._pending[mark:]

    def tick(self, now: float) -> list[Transition]:
        """Apply elapsed time (cool-down end, probe timeouts); return the transitions."""
        now = self._clamp(now)
        mark = len(self._pending)
        self._advance(now)
        return self._pending[mark:]

    # -- the machine -------------------------------------------------------------------

    def _clamp(self, now: float) -> float:
        # Stored times may come from another host's clock; never let time run backwards.
        if math.isnan(now):
            raise ValueError("now must be a number")
        if self._last_now is not None and now < self._last_now:
            return self._last_now
        self._last_now = now
        return now

    def _advance(self, now: float) -> None:
        if (self._state is BreakerState.OPEN and self._open_until is not None
                and now >= self._open_until):
            self._move(BreakerState.HALF_OPEN, "cool-down elapsed", 0.0, 0, now)
        if self._state is BreakerState.HALF_OPEN:
            timeout = self.config.probe_timeout
            for seq, issued_at in sorted(self._probes.items()):
                if self._state is not BreakerState.HALF_OPEN:
                    break
                if now - issued_at >= timeout:
                    del self._probes[seq]
                    self._probe_outcome(now, True, f"probe timed out after {timeout:g}s")

    def _check_window(self, now: float) -> None:
        calls, failures = self._window.totals(now)
        if calls < self.config.minimum_calls:
            return
        # Float division rounds both sides alike, so exactly 50% stays at 50% and does not
        # trip a 0.5 threshold.
        rate = failures / calls
        if rate > self.config.failure_rate_threshold:
            reason = (f"{failures}/{calls} calls failed, above "
                      f"{self.config.failure_rate_threshold:.0%}")
            self._move(BreakerState.OPEN, reason, rate, calls, now)

    def _probe_outcome(self, now: float, failed: bool, why: str) -> None:
        if failed:
            self._probe_failed += 1
        else:
            self._probe_ok += 1
        total = self.config.half_open_probes
        reported = self._probe_ok + self._probe_failed
        threshold = self.config.failure_rate_threshold
        rate = self._probe_failed / reported
        summary = f"{self._probe_failed} of {total} probes failed"
        # Decide as soon as the outcome is certain: waiting for the rest (perhaps hung
        # until probe_timeout) could not change it.
        if self._probe_failed / total > threshold:
            reason = f"{summary} ({why})" if why else summary
            self._move(BreakerState.OPEN, reason, rate, reported, now)
        elif (self._probe_failed + total - reported) / total <= threshold:
            self._move(BreakerState.CLOSED, summary, rate, reported, now)

    def _move(self, to: BreakerState, reason: str, rate: float, calls: int, now: float) -> None:
        self._pending.append(Transition(self.name, self._state, to, reason, rate, calls, now))
        del self._pending[:-MAX_PENDING]
        self._state = to
        self._generation += 1
        self._window.clear()
        self._probes.clear()
        self._issued = self._next_seq = self._probe_ok = self._probe_failed = 0
        self._open_until = now + self.config.open_duration if to is BreakerState.OPEN else None

    # -- storage -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the full state as a JSON-able dict."""
        return {
            "name": self.name,
            "config": self.config.to_dict(),
            "state": self._state.value,
            "generation": self._generation,
            "window": self._window.to_dict(),
            "open_until": self._open_until,
            "probes": [[seq, at] for seq, at in sorted(self._probes.items())],
            "issued": self._issued,
            "next_seq": self._next_seq,
            "probe_ok": self._probe_ok,
            "probe_failed": self._probe_failed,
            "last_now": self._last_now,
            "pending": [t.to_dict() for t in self._pending],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], config: BreakerConfig | None = None) -> CircuitBreaker:
        """Rebuild a breaker from `to_dict` output.

        A `config` given here replaces the stored one (settings changed across a deploy);
        the window restarts empty when its shape no longer matches.
        """
        breaker = cls(str(data["name"]), config or BreakerConfig.from_dict(data["config"]))
        breaker._state = BreakerState(data["state"])
        breaker._generation = int(data["generation"])
        window = window_from_dict(data["window"])
        if _shape(window.to_dict()) == _shape(breaker._window.to_dict()):
            breaker._window = window
        open_until = data.get("open_until")
        breaker._open_until = None if open_until is None else float(open_until)
        breaker._probes = {int(seq): float(at) for seq, at in data.get("probes", [])}
        breaker._issued = int(data.get("issued", 0))
        breaker._next_seq = int(data.get("next_seq", breaker._issued))
        breaker._probe_ok = int(data.get("probe_ok", 0))
        breaker._probe_failed = int(data.get("probe_failed", 0))
        last_now = data.get("last_now")
        breaker._last_now = None if last_now is None else float(last_now)
        if breaker._state is BreakerState.OPEN and breaker._open_until is None:
            # A damaged record must not hold the breaker open forever: probe at once.
            breaker._open_until = breaker._last_now or 0.0
        breaker._pending = [Transition.from_dict(t) for t in data.get("pending", [])]
        return breaker


def _shape(window: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in window.items() if k not in ("outcomes", "buckets")}
