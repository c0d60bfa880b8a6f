"""The ops stage without a broker: plan facts folded from events, one tick on a movable
clock, the governor rebuilt from past decisions, and the dispatcher obeying them."""

from __future__ import annotations

from typing import Any

from agents.ops import Action, Decision, GovernorConfig, RuleConfig
from agents.planning import accept, plan_record
from agents.scheduling.dispatch import Dispatcher, ReadyTask
from streams.ops import OpsConfig, OpsCore, decision_of
from tests.sim import Sim

T0 = 1_764_000_000_000
S = 1000


def accepted(plan_id: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    return accept(plan_record({"plan_id": plan_id, "project": "x", "name": plan_id,
                               "files": files}), accepted_at=T0)


def heartbeat(at: int, running: list[str], worker: str = "w1") -> dict[str, Any]:
    return {"worker_id": worker, "host": "h", "pid": 1, "state": "busy" if running else "idle",
            "capacity": 1, "running": running, "partitions": [0], "at": at}


def dispatched(plan_id: str, task_id: str) -> dict[str, Any]:
    return {"event_id": f"d-{task_id}", "plan_id": plan_id, "task_id": task_id,
            "path": task_id, "kind": "dev", "attempt": 1, "worker_id": "w1", "partition": 0,
            "dispatch_id": f"d-{task_id}", "dispatched_at": T0}


def busy_core(**rules: Any) -> OpsCore:
    """p1's long.py runs on the only worker; p2's c.py (critical, priority 10) and p3's
    x.py (priority 50, not critical) and y.py (60, critical) wait since T0."""
    core = OpsCore(OpsConfig(rules=RuleConfig(stall_after_s=60, **rules)))
    f = core.facts
    f.on_event("PlanAccepted", accepted("p1", [{"path": "long.py", "cost": 1}]), 1, T0)
    f.on_event("TaskDispatched", dispatched("p1", "long.py"), 2, T0)
    f.on_event("PlanAccepted", accepted("p2", [{"path": "c.py", "cost": 10}]), 3, T0)
    f.on_event("PlanAccepted", accepted("p3", [{"path": "x.py", "cost": 50},
                                               {"path": "y.py", "cost": 60}]), 4, T0)
    f.on_heartbeat(heartbeat(T0, ["p1/long.py"]))
    return core


def at(core: OpsCore, now: int) -> OpsCore:
    """The worker still runs long.py at `now` (it beats every second)."""
    core.facts.on_heartbeat(heartbeat(now, ["p1/long.py"]))
    return core


def test_the_facts_show_ready_critical_tasks_since_the_event_that_made_them_ready() -> None:
    core = busy_core()
    view = core.view(T0 + 5 * S)
    assert set(view.plans) == {"p1", "p2", "p3"}
    assert view.plans["p1"].waiting == {}
    c = view.plans["p2"].waiting["c.py"]
    assert (c.ready_since, c.priority, c.critical) == (T0, 10.0, True)
    assert not view.plans["p3"].waiting["x.py"].critical
    assert (view.pool.workers, view.pool.idle, view.pool.min_running_priority) == (1, 0, 1.0)
    # A heartbeat older than the worker timeout is no worker.
    assert core.view(T0 + 60 * S).pool.workers == 0


def test_a_stalled_critical_task_is_raised_above_every_waiting_one_once() -> None:
    core = busy_core()
    assert at(core, T0 + 59 * S).decide(T0 + 59 * S) == []  # not stalled yet
    decisions = at(core, T0 + 61 * S).decide(T0 + 61 * S)
    by_task = {d.params["task_id"]: d for d in decisions}
    assert set(by_task) == {"c.py", "y.py"}  # x.py is not on its plan's critical path
    c = by_task["c.py"]
    assert (c.action, c.target, c.plan_id, c.acted) == (
        Action.REPRIORITISE, "p2/c.py", "p2", True)
    assert c.params["priority"] == "61" and c.evidence == (f"plan:p2/task:c.py@ready:{T0}",)
    # The facts show what the dispatcher will do; the same evidence never decides twice.
    assert core.view(T0 + 62 * S).plans["p2"].waiting["c.py"].priority == 61.0
    assert at(core, T0 + 600 * S).decide(T0 + 600 * S) == []
    assert {s.why for s in core.suppressed} == {"already decided"}


def test_a_task_dispatched_or_a_plan_over_is_no_longer_waiting() -> None:
    core = busy_core()
    core.facts.on_event("TaskDispatched", dispatched("p2", "c.py"), 5, T0 + S)
    assert core.view(T0 + 2 * S).plans["p2"].waiting == {}
    core.facts.on_event("PlanRetired", {"plan_id": "p3", "status": "done",
                                        "retired_at": T0}, 6, T0 + S)
    assert "p3" not in core.view(T0 + 2 * S).plans


def test_dry_run_records_decisions_with_acted_false_and_changes_nothing() -> None:
    core = OpsCore(OpsConfig(dry_run=True))
    donor = busy_core()
    core.facts = donor.facts
    decisions = at(core, T0 + 200 * S).decide(T0 + 200 * S)
    assert decisions and not any(d.acted for d in decisions)
    assert all(d.to_record()["params"]["acted"] == "false" for d in decisions)
    assert core.view(T0 + 201 * S).plans["p2"].waiting["c.py"].priority == 10.0


def test_a_restart_rebuilds_cooldowns_and_taken_ids_from_the_decisions_on_the_topic() -> None:
    first = busy_core()
    past = [decision_of(d.to_record()) for d in at(first, T0 + 61 * S).decide(T0 + 61 * S)]
    assert all(p is not None for p in past)
    again = busy_core()
    again.restore(p for p in past if p is not None)
    assert at(again, T0 + 62 * S).decide(T0 + 62 * S) == []
    assert again.view(T0 + 62 * S).plans["p2"].waiting["c.py"].priority == 61.0
    # A new ready episode is new evidence, but the target is still cooling down (300 s).
    again.facts.on_event("TaskDispatched", dispatched("p2", "c.py"), 5, T0 + 63 * S)
    ready = {"event_id": "r", "plan_id": "p2", "task_id": "c.py", "path": "c.py",
             "kind": "dev", "attempt": 1, "priority": 10.0, "cache_key": "", "ready_at": 0}
    again.facts.on_event("TaskReady", ready, 6, T0 + 64 * S)
    assert at(again, T0 + 130 * S).decide(T0 + 130 * S) == []
    assert {s.why.split(":")[0] for s in again.suppressed} == {"already decided", "cooling down"}


def test_pause_and_resume_an_executor_from_error_windows() -> None:
    core = OpsCore(OpsConfig(governor=GovernorConfig(reverse_cooldown_s=0)))
    start, size = T0 - 5 * 60 * S, 5 * 60 * S
    for outcome, count in (("error", 8), ("ok", 2)):
        core.on_window({"key": "k", "metric": "executor.calls", "dims": {
            "executor": "http", "outcome": outcome}, "window_start": start,
            "window_size_ms": size, "count": count, "sum": 0.0, "min": 0.0, "max": 0.0,
            "p50": 0.0, "p95": 0.0, "p99": 0.0, "sketch": "{}"})
    (pause,) = core.decide(T0)
    assert (pause.action, pause.target) == (Action.PAUSE_EXECUTOR, "http")
    assert len(pause.evidence) == 2
    assert core.view(T0).executors["http"].paused_since == T0
    (resume,) = core.decide(T0 + 301 * S)  # no calls since the pause: the breaker probes
    assert resume.action is Action.RESUME_EXECUTOR
    assert core.view(T0 + 302 * S).executors == {}


# -- the dispatcher obeys ---------------------------------------------------------------
def ready(task_id: str, priority: float, kind: str = "dev", plan_id: str = "p") -> ReadyTask:
    return ReadyTask(plan_id, task_id, task_id, kind, priority, 1, 0.0)


def order(d: Dispatcher, slots: int = 10) -> list[str]:
    d.worker_seen("w", capacity=slots, partitions=[0], state="idle", now=0.0)
    return [a.task.task_id for a in d.assign(0.0)]


def test_a_task_reprioritised_jumps_the_queue_but_not_the_fixes() -> None:
    d = Dispatcher()
    for t in (ready("a", 5), ready("b", 3), ready("c", 1), ready("fix", 0, "fix")):
        d.add_ready(t)
    d.reprioritise("p", "c", 9)
    d.reprioritise("p", "c", 9)  # redelivered: the same
    assert order(d) == ["fix", "c", "a", "b"]


def test_a_plan_priority_is_added_to_its_tasks_queued_and_to_come() -> None:
    d = Dispatcher()
    d.add_ready(ready("a", 5, plan_id="p"))
    d.add_ready(ready("b", 3, plan_id="q"))
    d.reprioritise("p", None, -4)
    d.reprioritise("q", "later", 100)  # not ready yet: applied when it is
    d.add_ready(ready("c", 2, plan_id="p"))
    d.add_ready(ready("later", 0, plan_id="q"))
    assert order(d) == ["later", "b", "a", "c"]


def decision(action: Action, target: str, params: dict[str, str], acted: bool = True,
             plan_id: str | None = None) -> dict[str, Any]:
    return Decision("id-" + target, "rule", action, target, params, "why", ("e",), T0, acted,
                    plan_id).to_record()


def test_the_leader_obeys_acted_decisions_only_and_holds_a_paused_executor() -> None:
    leader = Sim().proc.leader
    d = leader.dispatcher
    for t in (ready("a", 5), ready("b", 3)):
        d.add_ready(t)
    leader.obey(decision(Action.REPRIORITISE, "p/b", {"task_id": "b", "priority": "9"},
                         acted=False, plan_id="p"))
    leader.obey(decision(Action.SCALE, "pool", {"replicas": "4", "from": "2"}))
    assert [t.task_id for t in sorted(
        (e[3] for e in d._heap), key=lambda t: -d.priority_of(t))] == ["a", "b"]
    leader.obey(decision(Action.REPRIORITISE, "p/b", {"task_id": "b", "priority": "9"},
                         plan_id="p"))
    assert d.priority_of(ready("b", 3)) == 9.0
    leader.obey(decision(Action.PAUSE_EXECUTOR, "demo", {"executor": "demo"}))
    assert leader.paused == {"demo"}
    leader.obey(decision(Action.RESUME_EXECUTOR, "demo", {"executor": "demo"}))
    assert leader.paused == set()
