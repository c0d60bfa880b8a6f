"""Windowed metrics as a pure fold: MetricPoints into tumbling and hopping window
aggregates (count, sum, min, max, p50/p95/p99 from a mergeable DDSketch), keyed for a
compacted topic, with bounded cardinality, a grace period for late points, and state
that checkpoints to plain data and rebuilds from the raw topic. No Kafka, no clock reads.
"""

from agents.metrics.aggregator import Aggregator
from agents.metrics.dimensions import (
    DEFAULT_ALLOW,
    LOW_CARDINALITY,
    OTHER,
    DimensionPolicy,
    Dims,
    dims_text,
)
from agents.metrics.records import Aggregate, Point, aggregate_key, merge
from agents.metrics.sketch import Sketch
from agents.metrics.windows import DEFAULT_SPECS, WindowSpec, window_starts

__all__ = [
    "DEFAULT_ALLOW",
    "DEFAULT_SPECS",
    "LOW_CARDINALITY",
    "OTHER",
    "Aggregate",
    "Aggregator",
    "DimensionPolicy",
    "Dims",
    "Point",
    "Sketch",
    "WindowSpec",
    "aggregate_key",
    "dims_text",
    "merge",
    "window_starts",
]
