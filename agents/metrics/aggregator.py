"""The windowed-metrics fold: raw points in, closed window aggregates out.

Time. The watermark is event time: the largest `at` seen, so the output depends only on
the points and their order, and replaying the raw topic rebuilds the same windows. A
window [start, start + size) closes, and its aggregate is emitted, once
`start + size + grace <= watermark`. When points stop coming the watermark would stall, so
`tick(now_ms)` lets the clock push it to `now_ms - idle_ms` (10 s): a quiet stream still
closes its windows, at most `idle_ms` after the grace. The edge calls `tick` only once it
has caught up with the topic (a replay is points only). Points stamped more than
`max_future_ms` ahead of the `now_ms` given to `add` (a producer's clock gone wild) are
dropped and counted, so one bad clock cannot close everyone's windows; the edge passes
the Kafka record timestamp as `now_ms`, which a replay sees again unchanged.

Nothing is silently lost: a point whose window already closed is counted in
`late_dropped[metric]`, non-finite values in `invalid_dropped`, points from the future
in `future_dropped`, points of metrics beyond `max_metrics` in `metrics_dropped`.

Memory. One series holds at most ceil((size + grace) / hop) open windows per spec: 2 for
the 1-minute tumbling spec and 6 for the 5-minute spec hopping every minute, 8 in all.
A window is a DDSketch: about 2 KB with one value, 5 KB for values spanning one decade,
9 KB for two, 15 KB for four (tracemalloc, tests/test_metrics_memory.py); the worst case is
2 x 2048 bins, about 130 KB. So one series costs about 8 x 5 KB = 40 KB, and a metric at its
series cap (51 series) about 2 MB. Its JSON form (snapshot, aggregate) is 0.4-1 KB.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from typing import Any

from agents.metrics.dimensions import DimensionPolicy, Dims, overflow
from agents.metrics.records import Aggregate, Point
from agents.metrics.sketch import Sketch
from agents.metrics.windows import DEFAULT_SPECS, WindowSpec, window_starts

WinKey = tuple[str, Dims, int, int]  # metric, dims, size_ms, start_ms

SNAPSHOT_VERSION = 1


class Aggregator:
    """Pure state machine folding MetricPoints into closed window aggregates."""

    def __init__(self, specs: Sequence[WindowSpec] = DEFAULT_SPECS,
                 policy: DimensionPolicy | None = None, *, idle_ms: int = 10_000,
                 max_future_ms: int = 60_000, max_metrics: int = 500) -> None:
        if not specs:
            raise ValueError("at least one window spec is needed")
        self.specs = tuple(specs)
        self.policy = policy or DimensionPolicy()
        self.idle_ms = idle_ms
        self.max_future_ms = max_future_ms
        self.max_metrics = max_metrics
        # Specs of one size share windows with the same start; the longest grace wins.
        self._grace: dict[int, int] = {}
        for s in self.specs:
            self._grace[s.size_ms] = max(self._grace.get(s.size_ms, 0), s.grace_ms)
        self.watermark: int | None = None
        self._windows: dict[WinKey, Sketch] = {}
        self._closing: dict[int, set[WinKey]] = {}  # close time -> windows
        self._heap: list[int] = []                  # close times, each once
        self._series: dict[str, dict[Dims, int]] = {}  # metric -> dims -> last seen at
        self.late_dropped: dict[str, int] = {}
        self.invalid_dropped = 0
        self.future_dropped = 0
        self.metrics_dropped = 0

    # -- the fold ---------------------------------------------------------------------
    def add(self, point: Point, now_ms: int) -> list[Aggregate]:
        """Fold one point in; return the windows its event time closed."""
        if not math.isfinite(point.value):
            self.invalid_dropped += 1
            return []
        if point.at > now_ms + self.max_future_ms:
            self.future_dropped += 1
            return []
        dims = self._series_of(point)
        if dims is None:
            self.metrics_dropped += 1
            return []
        missed = False
        for key in self._keys(point.name, dims, point.at):
            if self._closed(key):
                missed = True
                continue
            sketch = self._windows.get(key)
            if sketch is None:
                sketch = self._windows[key] = Sketch()
                self._schedule(key)
            sketch.add(point.value)
        if missed:
            self.late_dropped[point.name] = self.late_dropped.get(point.name, 0) + 1
        return self._advance(point.at)

    def tick(self, now_ms: int) -> list[Aggregate]:
        """Let the clock close the windows of a quiet stream; return them."""
        return self._advance(now_ms - self.idle_ms)

    def open_windows(self) -> int:
        return len(self._windows)

    def stats(self) -> dict[str, Any]:
        """Counters to publish: open windows, series, and every kind of dropped point."""
        return {"open_windows": len(self._windows),
                "series": sum(len(s) for s in self._series.values()),
                "late_dropped": dict(sorted(self.late_dropped.items())),
                "invalid_dropped": self.invalid_dropped,
                "future_dropped": self.future_dropped,
                "metrics_dropped": self.metrics_dropped, "watermark": self.watermark}

    # -- internals --------------------------------------------------------------------
    def _series_of(self, point: Point) -> Dims | None:
        dims = self.policy.kept(point.name, point.labels)
        known = self._series.get(point.name)
        if known is None:
            if len(self._series) >= self.max_metrics:
                return None
            known = self._series[point.name] = {}
        if dims in known:
            known[dims] = max(known[dims], point.at)
            return dims
        if len(known) >= self.policy.max_series:
            # Free the slots of series quiet for longer than the TTL (event time).
            cutoff = max(self.watermark or point.at, point.at) - self.policy.series_ttl_s * 1000
            for old in [d for d, seen in known.items() if seen < cutoff]:
                del known[old]
        if len(known) >= self.policy.max_series:
            return overflow(dims)
        known[dims] = point.at
        return dims

    def _keys(self, metric: str, dims: Dims, at: int) -> Iterable[WinKey]:
        seen: set[tuple[int, int]] = set()
        for spec in self.specs:
            for start in window_starts(at, spec):
                if (spec.size_ms, start) not in seen:
                    seen.add((spec.size_ms, start))
                    yield metric, dims, spec.size_ms, start

    def _close_at(self, key: WinKey) -> int:
        return key[3] + key[2] + self._grace[key[2]]

    def _closed(self, key: WinKey) -> bool:
        return self.watermark is not None and self._close_at(key) <= self.watermark

    def _schedule(self, key: WinKey) -> None:
        at = self._close_at(key)
        bucket = self._closing.get(at)
        if bucket is None:
            bucket = self._closing[at] = set()
            heapq.heappush(self._heap, at)
        bucket.add(key)

    def _advance(self, to: int) -> list[Aggregate]:
        if self.watermark is not None and to <= self.watermark:
            return []
        self.watermark = to
        out: list[Aggregate] = []
        while self._heap and self._heap[0] <= to:
            at = heapq.heappop(self._heap)
            for key in sorted(self._closing.pop(at)):
                metric, dims, size, start = key
                out.append(Aggregate.from_sketch(metric, dims, start, size,
                                                 self._windows.pop(key)))
        return out

    # -- checkpoints ------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Return the whole state as plain JSON-able data."""
        return {
            "version": SNAPSHOT_VERSION,
            "watermark": self.watermark,
            "windows": [[k[0], [list(d) for d in k[1]], k[2], k[3], self._windows[k].to_dict()]
                        for k in sorted(self._windows)],
            "series": {m: [[[list(d) for d in dims], seen] for dims, seen in sorted(s.items())]
                       for m, s in sorted(self._series.items())},
            "late_dropped": dict(sorted(self.late_dropped.items())),
            "invalid_dropped": self.invalid_dropped,
            "future_dropped": self.future_dropped,
            "metrics_dropped": self.metrics_dropped,
        }

    @classmethod
    def restore(cls, data: dict[str, Any], specs: Sequence[WindowSpec] = DEFAULT_SPECS,
                policy: DimensionPolicy | None = None, **options: int) -> Aggregator:
        """Rebuild from `snapshot` output, with the same configuration as the writer."""
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unknown aggregator snapshot version {data.get('version')!r}")
        agg = cls(specs, policy, **options)
        wm = data.get("watermark")
        agg.watermark = None if wm is None else int(wm)
        for metric, dims, size, start, sketch in data["windows"]:
            key: WinKey = (str(metric), _dims(dims), int(size), int(start))
            if int(size) not in agg._grace:
                raise ValueError(f"snapshot window size {size} ms has no spec here")
            agg._windows[key] = Sketch.from_dict(sketch)
            agg._schedule(key)
        agg._series = {str(m): {_dims(d): int(seen) for d, seen in rows}
                       for m, rows in data["series"].items()}
        agg.late_dropped = {str(k): int(v) for k, v in data["late_dropped"].items()}
        agg.invalid_dropped = int(data["invalid_dropped"])
        agg.future_dropped = int(data["future_dropped"])
        agg.metrics_dropped = int(data["metrics_dropped"])
        return agg


def _dims(rows: Iterable[Sequence[str]]) -> Dims:
    return tuple((str(k), str(v)) for k, v in rows)
