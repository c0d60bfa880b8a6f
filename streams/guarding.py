"""The edge around dispatch guards: breakers and limiters (the dispatcher's), transitions as
events; plan budgets (checked where the plan is folded)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agents.resilience.breaker import BreakerConfig
from agents.scheduling.guards import Budget, Guards
from agents.scheduling.model import decision_id
from streams import topics as T
from streams.emit import detach, new_id

if TYPE_CHECKING:
    from agents.scheduling.fold import PlanState
    from streams.edge.ports import Ports

log = logging.getLogger("devline.guards")
STATE_VALUE = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class GuardEdge:
    def __init__(self, ports: Ports) -> None:
        s = ports.settings
        self.p = ports
        self.guards = Guards(BreakerConfig(minimum_calls=s.breaker_min_calls,
                                           window_size=s.breaker_window,
                                           open_duration=s.breaker_open_s))
        self.escalated: set[str] = set()

    async def publish(self) -> None:
        """Publish every breaker transition not yet published, as an event and a metric."""
        for t in self.guards.drain():
            log.warning("circuit %s: %s -> %s (%s)", t.breaker, t.from_state, t.to_state, t.reason)
            await self.p.publish("CircuitTransition", {
                "event_id": new_id(), "breaker": t.breaker, "from_state": str(t.from_state),
                "to_state": str(t.to_state), "reason": t.reason, "error_rate": float(t.error_rate),
                "calls": int(t.calls), "at": int(t.at * 1000)}, topic=T.METRICS, key=t.breaker)
            detach(await self.p.emit.metric("guards", "breaker_state",
                                            STATE_VALUE[str(t.to_state)], executor=t.breaker))

    async def tick(self) -> None:
        self.guards.tick(self.p.clock())
        await self.publish()

    async def check_budget(self, state: PlanState) -> bool:
        """Escalate once when a plan's spending budget runs out; whether it did now."""
        h = state.header
        why = Budget.from_options(h.get("options") or {}).exhausted_by(
            int(h.get("tokens") or 0), float(h.get("cost") or 0))
        if why is None or h["plan_id"] in self.escalated:
            return False
        self.escalated.add(h["plan_id"])
        log.warning("plan %s: %s; dispatch stopped, escalating", h["plan_id"], why)
        await self.p.publish("Escalation", {
            "event_id": decision_id(h["plan_id"], "budget"), "plan_id": h["plan_id"],
            "task_id": None, "kind": "budget", "reason": why, "attempts": 0, "errors": [],
            "last_output": None, "at": self.p.now_ms()},
            topic=T.ESCALATIONS)
        return True
