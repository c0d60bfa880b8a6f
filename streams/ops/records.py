"""OpsDecision records back into `Decision`s, and the governor's state rebuilt from them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from agents.ops import Action, Decision
from agents.ops.governor import direction

# What `Decision.to_record` folds into `params`; the rest are the action's own parameters.
META = ("target", "rule", "evidence", "acted", "dry_run")


def decision_of(record: Mapping[str, Any]) -> Decision | None:
    """Return the Decision an OpsDecision record carries, or None when it is not one of
    the ops agent's (an unknown action, or an operator's record without a rule)."""
    params = dict(record.get("params") or {})
    try:
        action = Action(record["action"])
    except ValueError:
        return None
    if "rule" not in params:
        return None
    evidence = _evidence(params.get("evidence", ""))
    own = {k: v for k, v in params.items() if k not in META}
    return Decision(str(record["decision_id"]), params["rule"], action,
                    params.get("target") or str(record.get("plan_id") or ""), own,
                    str(record["reason"]), evidence, int(record["at"]),
                    params.get("acted") == "true", record.get("plan_id"))




def governor_state(decisions: Iterable[Decision]) -> dict[str, Any]:
    """Return `Governor.snapshot()` data as the decisions left it, so cool-downs, hysteresis
    and taken ids survive a restart (`Governor.restore(governor_state(past))`)."""
    seen: dict[str, int] = {}
    last: dict[tuple[str, str], int] = {}
    changes: dict[tuple[str, str], tuple[int, int]] = {}
    for d in sorted(decisions, key=lambda d: d.at):
        seen[d.decision_id] = d.at
        last[(str(d.action), d.target)] = d.at
        way = direction(d.action, d.params)
        if way is not None:
            changes[(way[0], d.target)] = (way[1], d.at)
    return {"seen": seen, "last": [[a, t, at] for (a, t), at in last.items()],
            "changes": [[f, t, w, at] for (f, t), (w, at) in changes.items()]}


def _evidence(raw: str) -> tuple[str, ...]:
    """Evidence as recorded: a JSON list (older records: comma-joined)."""
    try:
        items = json.loads(raw) if raw.startswith("[") else None
    except ValueError:
        items = None
    if isinstance(items, list):
        return tuple(str(e) for e in items)
    return tuple(e for e in raw.split(",") if e)
