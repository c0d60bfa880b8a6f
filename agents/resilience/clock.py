"""Time sources for the resilience logic: the real one and one that tests move by hand."""

from __future__ import annotations

import math
import time
from typing import Protocol


class Clock(Protocol):
    """A source of seconds that never runs backwards in practice."""

    def now(self) -> float:
        """Return the current time in seconds."""
        ...


class SystemClock:
    """Wall-clock seconds that never step backwards within this process.

    Breaker and autoscaler state is stored in tables and read by other processes and after
    restarts, so times must be comparable across processes: `time.monotonic()` restarts at
    boot and differs per host, `time.time()` does not. NTP can still step the wall clock
    back; holding the largest value seen keeps windows and cool-downs from running backwards.
    """

    def __init__(self) -> None:
        self._last = -math.inf

    def now(self) -> float:
        """Return the current wall-clock time, never less than a previous answer."""
        self._last = max(self._last, time.time())
        return self._last


class FakeClock:
    """A clock that moves only when told to, so tests need no sleeps."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        """Return the current fake time."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds` and return the new time."""
        if seconds < 0 or math.isnan(seconds):
            raise ValueError(f"cannot advance a clock by {seconds!r} seconds")
        self._now += seconds
        return self._now

    def set(self, t: float) -> float:
        """Jump to `t` (backwards too, to test how the logic copes with a stepped clock)."""
        if math.isnan(t):
            raise ValueError("cannot set a clock to NaN")
        self._now = float(t)
        return self._now
