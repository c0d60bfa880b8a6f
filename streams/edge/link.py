"""The broker link as the processor hears it: its own probe heartbeat, sent every tick and
read back from devline.workers. While it is not heard, the link clock (which worker expiry
and dispatch leases run on) stands still, so a broker outage is not "every worker is gone".
"""

from __future__ import annotations

import logging
import math
from typing import Any

from agents.scheduling.dispatch import LinkClock
from streams import topics as T
from streams.edge.ports import Ports
from streams.emit import detach

log = logging.getLogger("devline.scheduler")

PROBE_STATE = "probe"  # heartbeats the processor sends itself to know the link works
LINK_DOWN_AFTER_S = 3.0


class BrokerLink:
    def __init__(self, ports: Ports, processor_id: str) -> None:
        self.ports = ports
        self.probe_id = f"processor-{processor_id}"
        self.clock = LinkClock()
        self.probe_seen = -math.inf
        self.was_up = False

    @property
    def up(self) -> bool:
        return self.ports.clock() - self.probe_seen < LINK_DOWN_AFTER_S

    def heard(self, hb: dict[str, Any]) -> bool:
        """Whether a heartbeat is a probe (ours: the link works); workers' are not."""
        if hb["state"] != PROBE_STATE:
            return False
        if hb["worker_id"] == self.probe_id:
            self.probe_seen = self.ports.clock()
        return True

    async def tick(self) -> bool:
        """Advance the link clock, say when the link changes, probe again; whether it is up."""
        up = self.up
        if up != self.was_up:
            if up:
                log.info("broker link back: own probe heard again; worker expiry and leases "
                         "resume")
            elif self.probe_seen > -math.inf:
                log.warning("broker link down: no probe echo for %.0fs; worker expiry and "
                            "leases paused", LINK_DOWN_AFTER_S)
            self.was_up = up
        self.clock.tick(self.ports.clock(), up)
        await self.probe()
        return up

    async def probe(self) -> None:
        """Send ourselves a heartbeat; hearing it back says the broker link works."""
        try:
            detach(await self.ports.emit.event("WorkerHeartbeat", {
                "worker_id": self.probe_id, "host": "", "pid": 0, "state": PROBE_STATE,
                "capacity": 0, "running": [], "partitions": [], "at": self.ports.now_ms()},
                topic=T.WORKERS, key=self.probe_id))
        except Exception as exc:
            log.debug("probe not sent: %s", exc)
