"""Sliding windows of call outcomes for the circuit breaker, bounded in memory and JSON-able."""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Protocol


class CallWindow(Protocol):
    """Recent call outcomes: how many calls, how many of them failed."""

    def add(self, now: float, failed: bool) -> None:
        """Record one call outcome at `now`."""
        ...

    def totals(self, now: float) -> tuple[int, int]:
        """Return (calls, failures) still inside the window at `now`."""
        ...

    def clear(self) -> None:
        """Forget every outcome."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict that `window_from_dict` restores."""
        ...


class CountWindow:
    """The last `size` calls, whatever their age."""

    def __init__(self, size: int, outcomes: list[int] | None = None) -> None:
        if size < 1:
            raise ValueError(f"count window size must be >= 1, got {size!r}")
        self.size = size
        self._outcomes: deque[int] = deque((1 if o else 0 for o in outcomes or ()), maxlen=size)
        self._failures = sum(self._outcomes)

    def add(self, now: float, failed: bool) -> None:
        """Record one outcome, pushing out the oldest when full."""
        if len(self._outcomes) == self.size:
            self._failures -= self._outcomes[0]
        self._outcomes.append(1 if failed else 0)
        self._failures += 1 if failed else 0

    def totals(self, now: float) -> tuple[int, int]:
        """Return (calls, failures) among the last `size` calls."""
        return len(self._outcomes), self._failures

    def clear(self) -> None:
        """Forget every outcome."""
        self._outcomes.clear()
        self._failures = 0

    def to_dict(self) -> dict[str, Any]:
        """Return outcomes oldest first, 1 for a failure."""
        return {"kind": "count", "size": self.size, "outcomes": list(self._outcomes)}


class TimeWindow:
    """Calls of the last `seconds`, summed per bucket of `bucket` seconds.

    Memory is one bucket per slice, not one entry per call, so a busy executor costs the
    same as an idle one. Outcomes age out a whole bucket at a time: a call expires between
    `seconds - bucket` and `seconds` after it happened.
    """

    def __init__(
        self, seconds: float, bucket: float = 1.0, buckets: list[list[int]] | None = None,
    ) -> None:
        if not (math.isfinite(seconds) and math.isfinite(bucket)) or bucket <= 0 or seconds <= 0:
            raise ValueError("time window and bucket must be finite and > 0")
        self.seconds = seconds
        self.bucket = bucket
        # Rounding first keeps 0.3 / 0.1 == 2.9999... from costing an extra bucket.
        self.slots = max(1, math.ceil(round(seconds / bucket, 9)))
        # Each entry is [bucket index, calls, failures], indices strictly increasing.
        self._buckets: deque[list[int]] = deque(list(map(int, b)) for b in buckets or ())

    def _index(self, now: float) -> int:
        return math.floor(now / self.bucket)

    def _evict(self, index: int) -> None:
        while self._buckets and self._buckets[0][0] <= index - self.slots:
            self._buckets.popleft()

    def add(self, now: float, failed: bool) -> None:
        """Record one outcome in the bucket `now` falls in."""
        index = self._index(now)
        self._evict(index)
        if self._buckets and self._buckets[-1][0] >= index:
            # Same bucket, or a clock that stepped back: the newest bucket is the best home.
            last = self._buckets[-1]
        else:
            last = [index, 0, 0]
            self._buckets.append(last)
        last[1] += 1
        last[2] += 1 if failed else 0

    def totals(self, now: float) -> tuple[int, int]:
        """Return (calls, failures) in the buckets still inside the window at `now`."""
        self._evict(self._index(now))
        return sum(b[1] for b in self._buckets), sum(b[2] for b in self._buckets)

    def clear(self) -> None:
        """Forget every outcome."""
        self._buckets.clear()

    def to_dict(self) -> dict[str, Any]:
        """Return the buckets as [index, calls, failures] lists, oldest first."""
        return {
            "kind": "time",
            "seconds": self.seconds,
            "bucket": self.bucket,
            "buckets": [list(b) for b in self._buckets],
        }


def window_from_dict(data: dict[str, Any]) -> CountWindow | TimeWindow:
    """Rebuild a window from `to_dict` output."""
    kind = data.get("kind")
    if kind == "count":
        return CountWindow(int(data["size"]), [int(o) for o in data.get("outcomes", [])])
    if kind == "time":
        return TimeWindow(
            float(data["seconds"]), float(data["bucket"]), data.get("buckets", []),
        )
    raise ValueError(f"unknown window kind {kind!r}")
