"""What the ops rules read: plain data the edge keeps up to date from the aggregates topic
and the plan events. No behaviour beyond queries, so a test builds one by hand."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agents.metrics import Aggregate


@dataclass(frozen=True)
class WaitingTask:
    """A task that is ready (its dependencies are done) but not dispatched."""

    task_id: str
    ready_since: int  # ms
    priority: float
    critical: bool  # on the plan's critical path


@dataclass
class PlanFacts:
    plan_id: str
    priority: float = 0.0
    waiting: dict[str, WaitingTask] = field(default_factory=dict)


@dataclass
class PoolFacts:
    """The worker pool as the dispatcher sees it."""

    workers: int = 0          # current worker target / live workers
    idle: int = 0             # workers with free capacity
    min_running_priority: float | None = None  # lowest priority of a running task


@dataclass
class ExecutorFacts:
    name: str
    paused_since: int | None = None  # ms; None while running


@dataclass(frozen=True)
class CanaryFacts:
    """A deployment under canary analysis and the limit its metric must keep."""

    deployment_id: str
    metric: str
    threshold: float
    stat: str = "p95"  # p50 | p95 | p99 | mean | max
    dims: Mapping[str, str] = field(default_factory=dict)
    window_size: int = 60_000
    min_count: int = 5
    started_at: int = 0  # only windows starting at or after it count
    plan_id: str | None = None
    revision: str | None = None  # the canary's revision (a rollback names it)


@dataclass
class OpsView:
    """Latest aggregates by key and the facts the rules need."""

    aggregates: dict[str, Aggregate] = field(default_factory=dict)
    plans: dict[str, PlanFacts] = field(default_factory=dict)
    pool: PoolFacts = field(default_factory=PoolFacts)
    executors: dict[str, ExecutorFacts] = field(default_factory=dict)
    canaries: dict[str, CanaryFacts] = field(default_factory=dict)

    def observe(self, agg: Aggregate) -> None:
        """Keep one closed window (a compacted topic redelivers by key: last wins)."""
        self.aggregates[agg.key] = agg

    def prune(self, before_ms: int) -> None:
        """Forget windows that ended before `before_ms` (rules read the latest only)."""
        self.aggregates = {k: a for k, a in self.aggregates.items() if a.window_end >= before_ms}

    def latest(self, metric: str, size_ms: int, now_ms: int,
               match: Mapping[str, str] | None = None, since: int = 0) -> list[Aggregate]:
        """Return every series' aggregate of the newest window of `metric` and `size_ms`
        that has ended by `now_ms` and matches `match` (dims), sorted by key."""
        match = match or {}
        found = [a for a in self.aggregates.values()
                 if a.metric == metric and a.window_size == size_ms and a.window_end <= now_ms
                 and a.window_start >= since
                 and all(a.dim(k) == v for k, v in match.items())]
        if not found:
            return []
        newest = max(a.window_start for a in found)
        return sorted((a for a in found if a.window_start == newest), key=lambda a: a.key)
