"""The metrics stage of the read side: raw points to MetricAggregate records.

Rebuild. The aggregator's state lives in memory only; after a restart the stage reads the
raw topic again from `replay_from(now)` (the largest window + its grace + a minute back,
or from where its last written window says it stopped, whichever is older) and re-emits:
the fold is deterministic, so a re-emitted window carries the same value under the same
compacted key. A window that started before the replay point would be rebuilt from part
of its points, so it is not emitted (`floor_ms`): it closed, and was written, before the
restart.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from agents.metrics import DEFAULT_SPECS, Aggregate, Aggregator, Point, WindowSpec

REPLAY_MARGIN_MS = 60_000
RECENT_KEPT = 30  # closed windows per metric kept for `metric:<name>` snapshots


def lookback_ms(specs: Sequence[WindowSpec]) -> int:
    """How far back a rebuild reads: the largest window + its grace + a minute."""
    return max(s.size_ms + s.grace_ms for s in specs) + REPLAY_MARGIN_MS


def replay_from(now_ms: int, specs: Sequence[WindowSpec], last_close_ms: int | None) -> int:
    """The timestamp a rebuild starts reading the raw topic at.

    `last_close_ms` is the close time (end + grace) of the newest window already written;
    a stage down for longer than the margin starts from there, so the windows open when it
    stopped are rebuilt whole instead of skipped as partial.
    """
    start = now_ms if last_close_ms is None else min(now_ms, last_close_ms)
    return start - lookback_ms(specs)


def to_avro(agg: Aggregate) -> dict[str, Any]:
    """The MetricAggregate record of a closed window."""
    rec = agg.to_record()
    rec["window_size_ms"] = rec.pop("window_size")
    return rec


def from_avro(record: dict[str, Any]) -> Aggregate:
    return Aggregate.from_record({**record, "window_size": record["window_size_ms"]})


class WindowStage:
    """Aggregator plus the rebuild floor and the latest windows per metric (bounded)."""

    def __init__(self, specs: Sequence[WindowSpec] = DEFAULT_SPECS, *, floor_ms: int = 0,
                 idle_ms: int = 10_000, max_future_ms: int = 60_000,
                 max_metrics: int = 500) -> None:
        self.specs = tuple(specs)
        self.aggregator = Aggregator(self.specs, idle_ms=idle_ms, max_future_ms=max_future_ms,
                                     max_metrics=max_metrics)
        self.floor_ms = floor_ms
        self.recent: dict[str, OrderedDict[str, dict[str, Any]]] = {}
        self.emitted = 0
        self.partial_skipped = 0

    def add(self, record: dict[str, Any], timestamp_ms: int) -> list[Aggregate]:
        """Fold one decoded MetricPoint (its Kafka timestamp as the clock)."""
        return self._keep(self.aggregator.add(Point.from_record(record), timestamp_ms))

    def tick(self, now_ms: int) -> list[Aggregate]:
        """Close the windows of a quiet stream (call once caught up)."""
        return self._keep(self.aggregator.tick(now_ms))

    def latest(self, metric: str) -> list[dict[str, Any]]:
        """The newest closed windows of a metric, without sketches (oldest first)."""
        return list((self.recent.get(metric) or {}).values())

    def _keep(self, closed: list[Aggregate]) -> list[Aggregate]:
        out = []
        for agg in closed:
            if agg.window_start < self.floor_ms:
                self.partial_skipped += 1
                continue
            out.append(agg)
            # Bounded: the aggregator caps metrics (max_metrics), this caps windows each.
            kept = self.recent.setdefault(agg.metric, OrderedDict())
            kept[agg.key] = {k: v for k, v in to_avro(agg).items() if k != "sketch"}
            while len(kept) > RECENT_KEPT:
                kept.popitem(last=False)
        self.emitted += len(out)
        return out
