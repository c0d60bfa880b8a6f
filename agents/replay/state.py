"""A plan's state at any point of its log: the processor's own fold, applied in memory.

Nothing here has an effect: the fold returns commands and replay drops them. Events are
folded at their offsets (the fold's `seq`), so task records carry the same positions as the
live tables' records do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agents.replay.events import PlanEvent
from agents.scheduling import fold as F
from agents.scheduling.fixes import state_name
from devline.errors import DevlineError


class ReplayError(DevlineError):
    """A replay, verification or fork that cannot be done as asked (the reason says why)."""


@dataclass
class Replayed:
    """The state after folding events up to `seq` (the last event folded; 0: none)."""

    state: F.PlanState
    seq: int
    timestamp: int | None
    total: int  # events of the plan on the log (all of them, not only those folded)
    retired_at: int | None = None


def upto(events: Sequence[PlanEvent], to_seq: int | None = None, at_ms: int | None = None
         ) -> list[PlanEvent]:
    """The events up to and including `to_seq`, written at or before `at_ms`."""
    if to_seq is not None and to_seq < 0:
        raise ReplayError(f"--to must be a sequence number >= 0, got {to_seq}")
    return [e for e in events if (to_seq is None or e.seq <= to_seq)
            and (at_ms is None or e.timestamp <= at_ms)]


def replay(events: Sequence[PlanEvent], to_seq: int | None = None, at_ms: int | None = None
           ) -> Replayed:
    """Fold the plan's events (all, or up to a sequence number or a time) into a new state."""
    chosen = upto(events, to_seq, at_ms)
    state = F.PlanState()
    retired = None
    for ev in chosen:
        if ev.event_type is None or ev.value is None:
            continue
        if ev.event_type == "PlanRetired":  # gone from the live tables, not from history
            retired = int(ev.value.get("retired_at") or 0) or None
            continue
        F.apply(state, ev.event_type, ev.value, ev.offset)
    last = chosen[-1] if chosen else None
    return Replayed(state, last.seq if last else 0, last.timestamp if last else None,
                    len(events), retired)


def summary(r: Replayed, *, files: bool = False) -> dict[str, Any]:
    """What `devline replay` prints: the plan's counters and its files by state."""
    h = r.state.header
    by_state: dict[str, int] = {}
    attempts = retries = 0
    rows = []
    for tid, task in sorted(r.state.tasks.items()):
        name = state_name(task)
        by_state[name] = by_state.get(name, 0) + 1
        attempts += int(task["attempt"])
        retries += int(task["attempt"]) - 1
        if files:
            rows.append({"task_id": tid, "path": task["spec"]["path"], "state": name,
                         "attempt": task["attempt"], "kind": task["kind"],
                         "content_hash": task["content_hash"], "cached": task["cached"]})
    out: dict[str, Any] = {
        "plan_id": h.get("plan_id"), "name": h.get("name"),
        "status": str(h["status"]) if h.get("status") else None,
        "seq": r.seq, "of": r.total, "at": r.timestamp, "files": h.get("total", 0),
        "done": h.get("done", 0), "tasks": by_state, "attempts": attempts,
        "retries": retries, "executor_runs": h.get("executor_runs", 0),
        "cache_hits": h.get("cache_hits", 0), "dead": h.get("dead", 0),
        "fixes": h.get("fixes", 0), "reruns": h.get("reruns", 0),
        "qa": {k: h.get(f"qa_{k}", 0) for k in ("checks", "skipped", "failed")},
        "tokens": h.get("tokens", 0), "cost": h.get("cost", 0.0),
        "retired_at": r.retired_at,
    }
    if h.get("reason"):
        out["reason"] = h["reason"]
    if files:
        out["file_states"] = rows
    return out


def completion_boundary(events: Sequence[PlanEvent], at_seq: int) -> int:
    """The last event at or before `at_seq` that finished a task (the fold took it), or the
    plan's acceptance when none did: where a fork starts."""
    state = F.PlanState()
    boundary = 0
    for ev in events:
        if ev.seq > at_seq:
            break
        if ev.event_type is None or ev.value is None or ev.event_type == "PlanRetired":
            continue
        F.apply(state, ev.event_type, ev.value, ev.offset)
        if ev.event_type == "PlanAccepted" and state.header.get("accepted_seq") == ev.offset:
            boundary = ev.seq
        task = state.task(str(ev.value.get("task_id") or ""))
        if ev.event_type == "TaskCompleted" and task is not None and \
                task["status"] == F.DONE and task["seq"] == ev.offset:
            boundary = ev.seq
    if boundary == 0:
        raise ReplayError(f"the plan was not accepted at or before seq {at_seq}")
    return boundary
