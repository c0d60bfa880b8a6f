"""At 60% injected failures the executor's breaker opens, dispatch stops, then it recovers."""

from __future__ import annotations

from devline.settings import Settings
from streams import topics as T
from tests.harness import events, plan_events, running_pipeline, submit, wait_for


def test_breaker_opens_stops_dispatch_and_closes_after_recovery(topics: Settings) -> None:
    settings = topics.model_copy(update={"breaker_open_s": 2.0, "breaker_min_calls": 5,
                                         "breaker_window": 10})
    files = []
    for i in range(10):  # the first ten to run: 6 fail once (60%), 4 succeed
        files.append({"path": f"first{i}.py", "content": f"A{i} = {i}\n", "cost": 100 - i,
                      "simulate": {"duration_s": 0.1, "fail_first": 1 if i < 6 else 0,
                                   "fail_error": "upstream 503"}})
    for i in range(10):
        files.append({"path": f"later{i}.py", "content": f"B{i} = {i}\n", "cost": 1,
                      "simulate": {"duration_s": 0.1}})
    with running_pipeline(settings, workers=2):
        plan_id = submit(settings, {"project": "brk", "name": "breaker", "files": files})
        kind, _ = wait_for(settings, plan_id, {"PlanCompleted", "TaskDeadLettered"}, timeout=120)
        assert kind == "PlanCompleted"
        evs = plan_events(settings, plan_id)
        transitions = [v for _, et, v in events(settings, T.METRICS) if et == "CircuitTransition"]
    states = [(t["from_state"], t["to_state"]) for t in transitions]
    assert states[:3] == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    opened, half = transitions[0]["at"], transitions[1]["at"]
    assert transitions[0]["error_rate"] > 0.5 and half - opened >= 2000
    dispatched = [v["dispatched_at"] for _, et, v in evs if et == "TaskDispatched"]
    assert not [t for t in dispatched if opened < t < half], "dispatched while the breaker was open"
    assert len({v["task_id"] for _, et, v in evs if et == "TaskCompleted"}) == 20
