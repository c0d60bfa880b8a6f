"""Planner agent: PlanSubmitted → PlanAccepted (graph, priorities) or PlanRejected."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agents import planner
from devline.errors import DecodeError, PlanError, SchemaError
from streams import topics as T
from streams.poison import dead_letter_message, guarded

if TYPE_CHECKING:
    from streams.app import Pipeline

log = logging.getLogger("devline.planner")


def register_planner(pipeline: Pipeline) -> None:
    async def handle(message: Any) -> None:
        try:
            event_type, record = pipeline.codec.decode(message.value or b"")
        except DecodeError as exc:
            await dead_letter_message(pipeline, message, f"undecodable: {exc}")
            return
        if event_type != "PlanSubmitted":
            await dead_letter_message(pipeline, message,
                                      f"unexpected event type {event_type} on {T.PLANS}")
            return
        try:
            accepted = planner.accept(record)
        except PlanError as exc:
            rejected = planner.reject(record, exc)
            log.info("plan %s rejected: %s", rejected["plan_id"], exc)
            await pipeline.emit.event("PlanRejected", rejected)
            return
        try:
            await pipeline.emit.event("PlanAccepted", accepted)
        except SchemaError as exc:
            await dead_letter_message(pipeline, message, f"plan cannot be encoded: {exc}")
            return
        log.info("plan %s accepted: %d tasks, critical path %d long",
                 accepted["plan_id"], len(accepted["tasks"]), len(accepted["critical_path"]))

    @pipeline.app.agent(pipeline.plans_topic, name="planner")
    async def plan_agent(stream: Any) -> None:
        async for event in stream.events():
            await guarded(pipeline, event.message, handle)
