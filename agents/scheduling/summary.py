"""One folded plan as `devline status --json` prints it (the CLI and the read side)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.scheduling.fixes import state_name

if TYPE_CHECKING:
    from agents.scheduling.fold import PlanState


def summarize(plan_id: str, st: PlanState) -> dict[str, Any]:
    """Counts of tasks by state, the header's counters and, for a rejected plan, why."""
    counts: dict[str, int] = {}
    for task in st.tasks.values():
        name = state_name(task)
        counts[name] = counts.get(name, 0) + 1
    h = st.header
    return {"plan_id": plan_id, "name": h.get("name"), "status": h["status"],
            "files": h.get("total", 0), "done": h.get("done", 0),
            "cache_hits": h.get("cache_hits", 0), "tasks": counts,
            "qa": {k: h.get(f"qa_{k}", 0) for k in ("checks", "skipped", "failed")}
            | {"fixes": h.get("fixes", 0)},
            "reason": h.get("reason"), "retired_at": h.get("retired_at")}
