"""Prometheus figures of the read side, on a registry of their own.

Labels are low-cardinality only (task state, plan status, executor, QA status, topic):
never a plan, task or path. Counters and histograms count events once (by event id) as
they are read; gauges are computed at scrape time from the projections, so a state that
empties (no task `fixing` any more) reads 0 instead of lingering.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.scheduling.model import PlanStatus, TaskStatus
from streams.observe.projection import PlanProjection, WorkerView

# Agent-scale buckets: a task runs seconds (demo) to half an hour (a coding agent).
EXECUTOR_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800)
SHARD_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200)
TASK_STATES = (*(s.value for s in TaskStatus), "verified", "fixing")
PLAN_STATUSES = tuple(s.value for s in PlanStatus)


class ObserveMetrics:
    """The counters the event stream drives, and a collector for the projection gauges."""

    def __init__(self, plans: PlanProjection, workers: WorkerView,
                 lag: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.fix_attempts = Counter("devline_fix_attempts", "Fix tasks scheduled (QA or "
                                    "integration failures)", registry=r)
        self.qa_checks = Counter("devline_qa_checks", "QA checks run, by status",
                                 ["status"], registry=r)
        self.executor_seconds = Histogram(
            "devline_executor_seconds", "Executor run time of completed tasks "
            "(finished_at - started_at; cache hits excluded)", ["executor"],
            buckets=EXECUTOR_BUCKETS, registry=r)
        self.tokens = Counter("devline_tokens", "LLM tokens spent by completed tasks",
                              registry=r)
        self.cost = Counter("devline_cost", "Spend of completed tasks (the executors' "
                            "currency)", registry=r)
        self.shard_seconds = Histogram(
            "devline_integration_shard_seconds", "Integration test shard run time",
            buckets=SHARD_BUCKETS, registry=r)
        self.events = Counter("devline_observe_events", "Events read by the read side, "
                              "by type", ["type"], registry=r)
        self.undecodable = Counter("devline_observe_undecodable", "Records the read side "
                                   "could not decode, by topic", ["topic"], registry=r)
        r.register(_Gauges(plans, workers, lag))

    def on_event(self, event_type: str, event: dict[str, Any]) -> None:
        """Count one event (call once per event id: `PlanProjection.fresh`)."""
        self.events.labels(event_type).inc()
        if event_type == "TaskCompleted":
            self._qa(event.get("qa"))
            if not event.get("cached"):
                took = (int(event["finished_at"]) - int(event["started_at"])) / 1000
                self.executor_seconds.labels(str(event["executor"])).observe(max(took, 0.0))
                self.tokens.inc(max(int(event.get("tokens") or 0), 0))
                self.cost.inc(max(float(event.get("cost") or 0.0), 0.0))
        elif event_type == "TaskFailed":
            self._qa(event.get("qa"))
        elif event_type == "TaskRetryScheduled" and event.get("kind") == "fix":
            self.fix_attempts.inc()
        elif event_type == "IntegrationResult":
            self.shard_seconds.observe(max(int(event.get("duration_ms") or 0), 0) / 1000)

    def _qa(self, qa: dict[str, Any] | None) -> None:
        for check in (qa or {}).get("checks") or ():
            self.qa_checks.labels(str(check["status"])).inc()


class _Gauges(Collector):
    """Gauges read from the projections at scrape time."""

    def __init__(self, plans: PlanProjection, workers: WorkerView,
                 lag: Callable[[], dict[str, int]]) -> None:
        self.plans, self.workers, self.lag = plans, workers, lag

    def collect(self) -> Iterable[Metric]:
        tasks = GaugeMetricFamily("devline_tasks", "Tasks of the live plans by state",
                                  labels=["state"])
        counts = self.plans.task_states()
        for state in sorted(set(TASK_STATES) | set(counts)):
            tasks.add_metric([state], counts.get(state, 0))
        yield tasks
        plans = GaugeMetricFamily("devline_plans", "Live plans by status", labels=["status"])
        statuses = self.plans.plan_statuses()
        for status in sorted(set(PLAN_STATUSES) | set(statuses)):
            plans.add_metric([status], statuses.get(status, 0))
        yield plans
        workers = GaugeMetricFamily("devline_workers", "Worker processes: current (live "
                                    "heartbeats) and desired (the supervisors' target)",
                                    labels=["kind"])
        workers.add_metric(["current"], self.workers.current())
        desired = self.workers.desired_total()
        if desired is not None:
            workers.add_metric(["desired"], desired)
        yield workers
        if self.workers.backlog is not None:
            yield GaugeMetricFamily("devline_backlog", "Tasks ready and waiting for a worker "
                                    "(the scheduler's reading)", value=self.workers.backlog[0])
        lag = GaugeMetricFamily("devline_consumer_lag", "Records the read side has not read "
                                "yet, by topic", labels=["topic"])
        for topic, value in sorted(self.lag().items()):
            lag.add_metric([topic], value)
        yield lag
