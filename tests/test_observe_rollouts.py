"""The read side's rollout view: the plan's rollout folded from its records, the panel's
data for `rollout:<plan>`, and the low-cardinality gauges."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from streams.observe.rollouts import RolloutGauges, RolloutView
from tests.samples import NOW_MS, PLAN, sample_event


def test_a_started_then_live_rollout_shows_its_step_weight_and_gauges() -> None:
    view = RolloutView()
    assert view.view(PLAN, NOW_MS) is None  # unknown: the channel answers with an error
    assert view.record(PLAN, "RolloutStarted", sample_event("RolloutStarted"), NOW_MS)
    assert view.record(PLAN, "RolloutDeployDone", sample_event("RolloutDeployDone"),
                       NOW_MS + 10)
    assert view.record(PLAN, "RolloutAction", sample_event("RolloutAction"), NOW_MS + 11)
    panel = view.view(PLAN, NOW_MS + 20)
    assert panel is not None and panel["rollout"] and panel["phase"] == "baking"
    assert panel["weight"] == 50 and panel["deployed"] and panel["steps"] == [50, 100]
    assert any("baking 50%" in line for line in panel["lines"])
    registry = CollectorRegistry()
    registry.register(RolloutGauges(view))
    text = generate_latest(registry).decode()
    assert 'devline_rollouts{phase="baking"} 1.0' in text
    assert "devline_rollout_weight_percent 50.0" in text
    assert PLAN not in text  # no plan ids as labels


def test_the_view_is_bounded_and_ignores_what_it_cannot_fold() -> None:
    view = RolloutView(max_rollouts=2)
    for i in range(3):
        view.record(f"p{i}", "RolloutStarted", {**sample_event("RolloutStarted"),
                                                 "plan_id": f"p{i}", "event_id": f"s{i}"},
                    NOW_MS)
    assert list(view.states) == ["p1", "p2"]
    assert not view.record("p2", "TaskReady", sample_event("TaskReady"), NOW_MS)
    assert not view.record("p2", "RolloutDeployDone",
                           {**sample_event("RolloutDeployDone"), "event_id": ""}, NOW_MS)
