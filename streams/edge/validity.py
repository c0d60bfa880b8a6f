"""What makes a record of devline.events an event the fold takes (anything else is
dead-lettered with the reason this gives)."""

from __future__ import annotations

from typing import Any

from agents.scheduling.events import invalid as invalid_event
from devline.errors import DecodeError
from schemas.codec import Codec
from streams import topics as T
from streams.edge.ports import RawRecord

PLAN_EVENTS = frozenset({
    "PlanAccepted", "PlanRejected", "TaskDispatched", "TaskCompleted", "TaskFailed",
    "TaskRetryScheduled", "TaskReady", "TaskDeadLettered", "TaskRedriveRequested",
    "PlanCompleted", "PlanRetired", "QAResult", "Escalation", "IntegrationStarted",
    "IntegrationResult", "DeploymentEvent", "RolloutFixRequested"})


def parse_event(codec: Codec, rec: RawRecord) -> tuple[str, dict[str, Any]] | str:
    """The record's event, or why it is not a valid one on devline.events."""
    try:
        event_type, record = codec.decode(rec.value or b"")
    except DecodeError as exc:
        return f"undecodable: {exc}"
    if event_type not in PLAN_EVENTS:
        return f"unexpected event type {event_type} on {T.EVENTS}"
    if not record.get("plan_id"):
        return f"{event_type} without a plan id on {T.EVENTS}"
    why = invalid_event(event_type, record)
    if why is not None:
        return f"invalid {event_type}: {why}"
    if rec.key != str(record["plan_id"]).encode():
        # A plan's events must share one partition: its order is the fold's order.
        return f"{event_type} keyed {rec.key!r}, not by its plan id {record['plan_id']!r}"
    return event_type, record
