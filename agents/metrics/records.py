"""The records the metrics core reads and writes: raw points in, window aggregates out."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.metrics.dimensions import Dims, dims_text
from agents.metrics.sketch import Sketch

QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Point:
    """One MetricPoint (schemas/metric_point.avsc), decoded."""

    source: str
    name: str
    value: float
    at: int  # ms since the epoch
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Point:
        """Build from a decoded MetricPoint record."""
        return cls(str(record["source"]), str(record["name"]), float(record["value"]),
                   int(record["at"]), dict(record.get("labels") or {}))


def aggregate_key(metric: str, dims: Dims, size_ms: int, start_ms: int) -> str:
    """Return `metric|k=v,...|size_ms|start_ms`, the compacted topic's key of a window."""
    return f"{metric}|{dims_text(dims)}|{size_ms}|{start_ms}"


@dataclass(frozen=True)
class Aggregate:
    """A closed window of one series: totals, quantiles and the sketch to merge it later.

    Quantiles are within 1% relative error of the exact ones (DDSketch, alpha 0.01).
    """

    metric: str
    dims: Dims
    window_start: int  # ms
    window_size: int   # ms
    count: int
    sum: float
    min: float
    max: float
    p50: float
    p95: float
    p99: float
    sketch: str  # Sketch.to_json()

    @property
    def key(self) -> str:
        return aggregate_key(self.metric, self.dims, self.window_size, self.window_start)

    @property
    def window_end(self) -> int:
        return self.window_start + self.window_size

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def dim(self, name: str) -> str | None:
        """Return the value of dimension `name`, or None."""
        return next((v for k, v in self.dims if k == name), None)

    @classmethod
    def from_sketch(cls, metric: str, dims: Dims, start: int, size: int,
                    sketch: Sketch) -> Aggregate:
        p50, p95, p99 = (sketch.quantile(q) for q in QUANTILES)
        return cls(metric, dims, start, size, sketch.count, sketch.sum, sketch.min,
                   sketch.max, p50, p95, p99, sketch.to_json())

    def to_record(self) -> dict[str, Any]:
        """Return a JSON-able dict (dims as a map, as an Avro record would carry them)."""
        return {"key": self.key, "metric": self.metric, "dims": dict(self.dims),
                "window_start": self.window_start, "window_size": self.window_size,
                "count": self.count, "sum": self.sum, "min": self.min, "max": self.max,
                "p50": self.p50, "p95": self.p95, "p99": self.p99, "sketch": self.sketch}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Aggregate:
        """Rebuild from `to_record` output."""
        return cls(str(record["metric"]), tuple(sorted(dict(record["dims"]).items())),
                   int(record["window_start"]), int(record["window_size"]),
                   int(record["count"]), float(record["sum"]), float(record["min"]),
                   float(record["max"]), float(record["p50"]), float(record["p95"]),
                   float(record["p99"]), str(record["sketch"]))


def merge(a: Aggregate, b: Aggregate) -> Aggregate:
    """Merge two aggregates of one series into one spanning both windows.

    Use it for partial aggregates of the same window (from two partitions) or for
    adjacent windows (five 1-minute windows make a 5-minute one). Overlapping hopping
    windows would count shared points twice.
    """
    if (a.metric, a.dims) != (b.metric, b.dims):
        raise ValueError(f"cannot merge {a.key} with {b.key}: different series")
    sketch = Sketch.from_json(a.sketch)
    sketch.merge(Sketch.from_json(b.sketch))
    start = min(a.window_start, b.window_start)
    size = max(a.window_end, b.window_end) - start
    return Aggregate.from_sketch(a.metric, a.dims, start, size, sketch)
