"""The read side's projections and Prometheus mapping, without a broker."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agents.metrics import Aggregator, WindowSpec
from agents.scheduling.fold import PlanState, apply
from streams.observe.projection import WORKER_TTL_MS, PlanProjection, WorkerView
from streams.observe.prom import ObserveMetrics
from streams.observe.windows import WindowStage, from_avro, lookback_ms, replay_from, to_avro

DAY_MS = 24 * 3600 * 1000


def accepted(plan_id: str, tasks: list[str]) -> dict[str, Any]:
    return {"plan_id": plan_id, "project": "demo", "name": "demo", "accepted_at": 0,
            "critical_path": [], "levels": [], "inferred_edges": 0, "options": {},
            "tasks": [{"task_id": t, "path": f"{t}.py", "language": "python",
                       "description": "", "depends_on": [], "content": None, "cost": 1.0,
                       "priority": 1.0, "level": 0, "executor": "demo", "simulate": None}
                      for t in tasks]}


def dispatched(plan_id: str, t: str) -> dict[str, Any]:
    return {"event_id": f"d-{plan_id}-{t}", "plan_id": plan_id, "task_id": t,
            "path": f"{t}.py", "kind": "dev", "attempt": 1, "worker_id": "w1", "partition": 0,
            "dispatch_id": f"x-{t}", "dispatched_at": 1}


def completed(plan_id: str, t: str, at: int, took_ms: int = 7_000) -> dict[str, Any]:
    return {"event_id": f"c-{plan_id}-{t}", "plan_id": plan_id, "task_id": t,
            "path": f"{t}.py", "attempt": 1, "worker_id": "w1", "dispatch_id": f"x-{t}",
            "executor": "demo", "cache_key": f"k-{t}", "content": "", "content_hash": f"h-{t}",
            "size": 0, "cached": False, "started_at": at - took_ms, "finished_at": at,
            "tokens": 100, "cost": 0.5,
            "qa": {"chain": "default", "passed": True, "duration_ms": 5, "fingerprint": "",
                   "checks": [{"name": "parse", "status": "pass"},
                              {"name": "pytest", "status": "skipped"}]}}


def run_plan(plan_id: str, tasks: list[str], at: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = [("PlanAccepted", accepted(plan_id, tasks))]
    for t in tasks:
        out += [("TaskDispatched", dispatched(plan_id, t)),
                ("TaskCompleted", completed(plan_id, t, at))]
    return out


def feed(proj: PlanProjection, metrics: ObserveMetrics | None,
         events: list[tuple[str, dict[str, Any]]], start: int = 0) -> list[Any]:
    deltas = []
    for seq, (et, ev) in enumerate(events, start):
        if metrics is not None and proj.fresh(ev):
            metrics.on_event(et, ev)
        deltas.append(proj.apply(et, ev, seq))
    return deltas


def scrape(metrics: ObserveMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_projection_reads_like_replay_and_deltas_name_task_and_state() -> None:
    events = run_plan("p1", ["a", "b"], at=1_000)
    proj = PlanProjection(retention_ms=DAY_MS)
    deltas = feed(proj, None, events)
    replayed = PlanState()
    for seq, (et, ev) in enumerate(events):
        apply(replayed, et, ev, seq)
    assert proj.plans["p1"].snapshot() == replayed.snapshot()
    assert [d.to_dict() for d in deltas[-2:]] == [
        {"type": "TaskDispatched", "task": "b", "status": "dispatched",
         "plan_status": "running", "seq": 3},
        {"type": "TaskCompleted", "task": "b", "status": "verified", "plan_status": "done",
         "seq": 4}]
    summary = proj.summary("p1")
    assert summary is not None
    assert summary["status"] == "done" and summary["tasks"] == {"verified": 2}
    assert proj.task_states() == {"verified": 2}
    assert proj.summary("nope") is None


def test_finished_plans_are_evicted_after_the_retention_and_on_retirement() -> None:
    proj = PlanProjection(retention_ms=60_000)
    feed(proj, None, run_plan("old", ["a"], at=1_000))
    feed(proj, None, [("PlanAccepted", accepted("live", ["x", "y"]))], start=10)
    feed(proj, None, run_plan("gone", ["a"], at=1_000), start=20)
    assert proj.evict(now_ms=30_000) == []
    assert proj.evict(now_ms=61_000) == ["old", "gone"]
    assert set(proj.plans) == {"live"}  # a running plan stays, however old
    # Late events of an evicted plan do not resurrect it.
    feed(proj, None, [("TaskCompleted", completed("old", "a", 2_000))], start=30)
    assert set(proj.plans) == {"live"}
    retired = {"event_id": "r", "plan_id": "live", "status": "done", "finished_at": 0,
               "retired_at": 1}
    assert proj.apply("PlanRetired", retired, 40) is not None
    assert proj.plans == {}


def test_counters_count_each_event_once_and_gauges_follow_the_projection() -> None:
    proj, workers = PlanProjection(retention_ms=DAY_MS), WorkerView()
    metrics = ObserveMetrics(proj, workers, lambda: {"devline.events": 3})
    events = run_plan("p1", ["a", "b", "c"], at=100_000)
    feed(proj, metrics, events + events[-2:])  # a redelivered completion counts once
    fix = {"event_id": "f1", "plan_id": "p1", "task_id": "a", "path": "a.py", "attempt": 2,
           "delay_ms": 0, "due_at": 0, "reason": "fix 1/3", "kind": "fix"}
    integ = {"event_id": "i1", "plan_id": "other", "duration_ms": 42_000}  # no such plan
    feed(proj, metrics, [("TaskRetryScheduled", fix), ("IntegrationResult", integ)], 50)
    workers.heartbeat({"worker_id": "w1", "state": "busy", "running": ["a"]}, 0)
    workers.point({"source": "supervisor", "name": "replicas_desired", "value": 4.0,
                   "labels": {"supervisor": "h-1"}}, 0)
    workers.point({"source": "scheduler", "name": "backlog", "value": 9.0, "labels": {}}, 0)
    got = scrape(metrics)
    assert got[("devline_tasks", (("state", "verified"),))] == 3
    assert got[("devline_tasks", (("state", "fixing"),))] == 0
    assert got[("devline_plans", (("status", "done"),))] == 1
    assert got[("devline_executor_seconds_count", (("executor", "demo"),))] == 3
    assert got[("devline_executor_seconds_bucket", (("executor", "demo"), ("le", "5.0")))] == 0
    assert got[("devline_executor_seconds_bucket", (("executor", "demo"), ("le", "15.0")))] == 3
    assert got[("devline_qa_checks_total", (("status", "pass"),))] == 3
    assert got[("devline_qa_checks_total", (("status", "skipped"),))] == 3
    assert got[("devline_tokens_total", ())] == 300
    assert got[("devline_cost_total", ())] == 1.5
    assert got[("devline_fix_attempts_total", ())] == 1
    assert got[("devline_integration_shard_seconds_sum", ())] == 42
    assert got[("devline_workers", (("kind", "current"),))] == 1
    assert got[("devline_workers", (("kind", "desired"),))] == 4
    assert got[("devline_backlog", ())] == 9
    assert got[("devline_consumer_lag", (("topic", "devline.events"),))] == 3
    # No plan, task or path ever becomes a label.
    labels = {v for (_, ls) in got for _, v in ls}
    assert not labels & {"p1", "a", "b", "c", "a.py"}


def test_workers_expire_after_15s_of_silence_and_probes_are_not_workers() -> None:
    view = WorkerView()
    assert view.heartbeat({"worker_id": "w1", "state": "idle", "running": []}, 1_000)
    assert not view.heartbeat({"worker_id": "w1", "state": "idle", "running": []}, 2_000)
    assert view.heartbeat({"worker_id": "w1", "state": "busy", "running": ["t"]}, 3_000)
    assert not view.heartbeat({"worker_id": "p", "state": "probe", "running": []}, 3_000)
    assert view.expire(3_000 + WORKER_TTL_MS) == []
    assert view.expire(3_001 + WORKER_TTL_MS) == ["w1"]
    assert view.current() == 0
    view.heartbeat({"worker_id": "w2", "state": "idle", "running": []}, 0)
    assert view.heartbeat({"worker_id": "w2", "state": "stopped", "running": []}, 1)
    assert view.snapshot()["workers"] == []


def test_window_stage_matches_the_aggregator_and_skips_partial_windows_after_a_replay() -> None:
    specs = (WindowSpec(2, None, 1), WindowSpec(4, 2, 1))
    points = [{"source": "s", "name": "lat", "value": float(i % 7), "labels": {},
               "at": 10_000 + i * 150} for i in range(60)]
    agg = Aggregator(specs)
    expected = [a for p in points for a in agg.add(_point(p), p["at"])] + agg.tick(10**9)
    stage = WindowStage(specs)
    got = [a for p in points for a in stage.add(p, p["at"])] + stage.tick(10**9)
    assert [to_avro(a) for a in got] == [to_avro(a) for a in expected]
    assert all(from_avro(to_avro(a)) == a for a in got)
    # A rebuild from the middle writes only windows it saw whole.
    floor = 14_000
    late = WindowStage(specs, floor_ms=floor)
    partial = [a for p in points if p["at"] >= floor for a in late.add(p, p["at"])]
    partial += late.tick(10**9)
    whole = {a.key: to_avro(a) for a in expected if a.window_start >= floor}
    assert {a.key: to_avro(a) for a in partial} == whole and late.partial_skipped > 0


def test_replay_starts_a_window_and_a_minute_before_the_last_written_close() -> None:
    specs = (WindowSpec(60, None, 10), WindowSpec(300, 60, 10))
    assert lookback_ms(specs) == 370_000
    assert replay_from(1_000_000, specs, None) == 630_000
    assert replay_from(1_000_000, specs, 800_000) == 430_000
    assert replay_from(1_000_000, specs, 2_000_000) == 630_000


def _point(record: dict[str, Any]) -> Any:
    from agents.metrics import Point

    return Point.from_record(record)
