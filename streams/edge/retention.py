"""Retention: finished plans past `plan_retention_s` are asked to leave the tables with a
PlanRetired each, which the fold carries out (so a replay of the log retires them too)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from functools import partial

from agents.scheduling import fold as F
from agents.scheduling.model import decision_id
from streams.edge.persist import persist
from streams.edge.ports import Ports

log = logging.getLogger("devline.scheduler")

SWEEP_EVERY_S = 60.0  # at most this long between sweeps
REMEMBERED = 10_000   # plans asked for and not yet read back (a bound, not a target)


class Retention:
    def __init__(self, ports: Ports) -> None:
        self.ports = ports
        self.asked: OrderedDict[str, None] = OrderedDict()

    def due(self, tick: int) -> bool:
        every = min(SWEEP_EVERY_S, self.ports.settings.plan_retention_s / 2)
        return tick % max(1, int(every)) == 0

    async def sweep(self) -> int:
        """A PlanRetired for each finished plan past its retention; how many were asked."""
        p = self.ports
        now = p.now_ms()
        keep = int(p.settings.plan_retention_s * 1000)
        asked = 0
        for plan_id, header in list(p.plans.items()):
            if plan_id in self.asked or not F.retirable(header, now, keep):
                continue
            finished = int(header["completed_at"])
            await persist(partial(p.publish, "PlanRetired", {
                "event_id": decision_id(plan_id, finished, "retire"), "plan_id": plan_id,
                "status": str(header["status"]), "finished_at": finished, "retired_at": now}),
                what=f"retiring plan {plan_id}", log=log, sleep=p.sleep)
            self.asked[plan_id] = None
            asked += 1
            log.info("plan %s finished %.1f h ago: retired from the tables", plan_id,
                     (now - finished) / 3_600_000)
        while len(self.asked) > REMEMBERED:
            self.asked.popitem(last=False)
        return asked
