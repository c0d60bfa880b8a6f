"""Replay and fork against Kafka: read one plan's events, hand them to `agents.replay`.

Reading is a plain assigned consumer on the plan's partition of `devline.events` (no group,
nothing committed, nothing produced): a replay has no side effects. A fork stores its
journal in the artifact store and submits the new plan like `devline submit` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

from agents.planning import plan_record
from agents.planning.briefs import open_brief
from agents.replay.events import PlanEvent, numbered
from agents.replay.fork import ForkPlan, plan_fork
from devline.errors import DecodeError
from devline.settings import Settings
from schemas.codec import Codec
from streams import topics as T
from streams.client import plan_partition, publish_plan, records


async def plan_events(settings: Settings, plan_id: str, *, codec: Codec | None = None,
                      topic: str = T.EVENTS) -> list[PlanEvent]:
    """Every record keyed by `plan_id` on its partition, decoded and numbered (seq from 1)."""
    codec = codec or Codec.from_settings(settings)
    key = plan_id.encode()
    rows: list[tuple[int, int, int, str | None, dict[str, Any] | None]] = []
    part = await plan_partition(settings, plan_id)
    async for rec in records(settings, topic, idle_timeout=None, partitions=[part]):
        if rec.key != key:
            continue
        try:
            event_type, value = codec.decode(rec.value or b"")
        except DecodeError:
            rows.append((rec.partition, rec.offset, rec.timestamp, None, None))
            continue
        rows.append((rec.partition, rec.offset, rec.timestamp, event_type, value))
    return numbered(rows)


async def _briefs(settings: Settings, events: list[PlanEvent]
                  ) -> dict[str, tuple[str, str | None]]:
    store = settings.artifact_store()
    wanted = {t["brief"] for e in events if e.event_type == "PlanAccepted" and e.value
              for t in e.value["tasks"] if t.get("brief")}
    found: dict[str, tuple[str, str | None]] = {}
    for digest in sorted(wanted):
        data = await store.get(digest)
        if data is not None:
            found[digest] = open_brief(data)
    return found


async def fork(settings: Settings, plan_id: str, at_seq: int, *, executor: str | None = None,
               rerun: Collection[str] = (), new_id: str | None = None,
               project: str | None = None, force: bool = False,
               known_executors: Collection[str] | None = None
               ) -> tuple[ForkPlan, dict[str, Any]]:
    """Plan the fork, store its journal, submit it; (the plan, the submitted record)."""
    events = await plan_events(settings, plan_id)
    plan = plan_fork(events, at_seq, executor=executor, rerun=rerun, new_id=new_id,
                     project=project, force=force, briefs=await _briefs(settings, events))
    journal = await settings.artifact_store().put(plan.journal_blob())
    doc = {**plan.submission, "options": {**plan.submission["options"],
                                          "fork.journal": journal}}
    record = await asyncio.to_thread(plan_record, doc, known_executors)
    await publish_plan(settings, record)
    return plan, record


