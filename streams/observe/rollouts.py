"""The read side's view of canary rollouts: each plan's rollout folded from
`devline.rollouts` (the same pure machine the rollout stage runs), for the dashboard's
`rollout:<plan>` channel and the Prometheus gauges. Bounded: the most recent
`MAX_ROLLOUTS` plans are kept."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.rollout import RolloutEventError, apply, initial_state
from streams.rollout.records import ACTION, to_event

MAX_ROLLOUTS = 1000
AUDIT_KEPT = 20
ACTIVE = ("progressing", "baking", "paused", "rolling_back")


class RolloutView:
    def __init__(self, max_rollouts: int = MAX_ROLLOUTS) -> None:
        self.max = max_rollouts
        self.states: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.audit: dict[str, list[dict[str, Any]]] = {}

    def record(self, plan: str, avro_type: str, value: dict[str, Any], at_ms: int) -> bool:
        """Fold one record of `devline.rollouts`; True when the plan's rollout changed."""
        if avro_type == ACTION:
            self.audit[plan] = [*self.audit.get(plan, []), value][-AUDIT_KEPT:]
            return True
        event = to_event(avro_type, value)
        if event is None:
            return False
        state = self.states.get(plan) or initial_state(plan)
        try:
            apply(state, event[0].value, event[1], now_ms=at_ms)
        except RolloutEventError:
            return False  # the stage dead-letters nothing yet; the view skips it too
        self.states[plan] = state
        self.states.move_to_end(plan)
        while len(self.states) > self.max:
            gone, _ = self.states.popitem(last=False)
            self.audit.pop(gone, None)
        return True

    def view(self, plan: str, now_ms: int) -> dict[str, Any] | None:
        """The dashboard panel's data (as `GET /api/rollouts/<plan>`), None if unknown."""
        from devline.cli.rollout import describe
        from streams.observe.ui import rollout_view

        state = self.states.get(plan)
        if state is None:
            return None
        lines = describe(state, self.audit.get(plan, []), now_ms) \
            if state.get("run") is not None else []
        return rollout_view(state, lines)


class RolloutGauges(Collector):
    """`devline_rollouts{phase}` and `devline_rollout_weight_percent` (the highest weight
    of the active rollouts): low-cardinality, no plan ids."""

    def __init__(self, view: RolloutView) -> None:
        self.rollouts = view

    def collect(self) -> Iterable[Metric]:
        phases = GaugeMetricFamily("devline_rollouts", "Rollouts by phase",
                                   labels=["phase"])
        counts: dict[str, int] = {}
        weight = 0.0
        for state in self.rollouts.states.values():
            phase = str(state.get("phase"))
            counts[phase] = counts.get(phase, 0) + 1
            steps = (state.get("spec") or {}).get("steps") or []
            step = int(state.get("step") or 0)
            if phase in ACTIVE and state.get("deployed") and step < len(steps):
                weight = max(weight, float(steps[step]))
        for phase, n in sorted(counts.items()):
            phases.add_metric([phase], n)
        yield phases
        yield GaugeMetricFamily("devline_rollout_weight_percent", "Canary weight of the "
                                "active rollout furthest along (0 when none is live)",
                                value=weight)
