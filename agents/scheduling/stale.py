"""Should a worker run the work item in front of it? Pure rules; the worker gathers facts.

A work item can reach a worker that should not run it: a copy sent again after the
processor crashed, an item a lease superseded, an item whose partition moved to this
worker while its first owner still runs it or already reported it. The log and recent
heartbeats tell; a wrong "skip" is safe (the dispatch lease re-opens the task), a wrong
"run" is a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Events after our dispatch that mean the item is no longer the task's current work. A later
# TaskDispatched alone does not: the fold takes one only after a TaskReady re-opened the
# task (which does); any other was refused (two dispatchers for a moment, or a dispatcher
# that had not yet read our dispatch back) and never became a work item.
SUPERSEDING = frozenset({"TaskReady", "TaskCompleted", "TaskFailed", "TaskRetryScheduled",
                         "TaskDeadLettered"})


def stale_reason(item: dict[str, Any], later: Iterable[tuple[str, dict[str, Any]]],
                 running_on: Iterable[str]) -> str | None:
    """Why `item` must not run, or None.

    `later`: (event type, record) of the item's task, read from the log after the
    TaskDispatched the item carries out. `running_on`: other live workers whose latest
    heartbeat lists the task as running.
    """
    for event_type, ev in later:
        if event_type in ("TaskCompleted", "TaskFailed") and ev.get("dispatch_id") == \
                item["dispatch_id"]:
            return f"already ran: its {event_type} is in the log"
        if event_type in SUPERSEDING:
            return f"superseded: {event_type} for attempt {ev.get('attempt')} came after it"
    others = sorted(running_on)
    if others:
        return f"already running on {', '.join(others)}"
    return None
