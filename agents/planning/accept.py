"""The planner's logic: infer dependencies, find cycles, set priorities; accept or reject.

Pure code: a validated PlanSubmitted goes in, a PlanAccepted or PlanRejected comes out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import networkx as nx

from agents.planning.load import now_ms
from agents.planning.rules import submission_digest, validate
from agents.scheduling.priority import bottom_levels, critical_path, topological_levels
from devline.errors import PlanError


def estimate_cost(f: Mapping[str, Any]) -> float:
    """The plan's estimate, else a size-based one (1 unit per KB of carried content)."""
    if f.get("cost") is not None:
        return float(f["cost"])
    content = f.get("content")
    return max(1.0, len(content.encode()) / 1024) if content else 1.0


def accept(record: Mapping[str, Any], executors: Collection[str] | None = None, *,
           accepted_at: int | None = None) -> dict[str, Any]:
    """Build the PlanAccepted record, or raise PlanError naming the cycle or bad field."""
    from agents.analysis import analyze_sources

    validate(record, executors)
    files = {f["path"]: f for f in record["files"]}
    declared = {p: list(f.get("depends_on") or []) for p, f in files.items()}
    analysis = analyze_sources({p: f.get("content") or "" for p, f in files.items()},
                               declared=declared)
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    graph.add_edges_from((a, b) for a, b in analysis.edges if a in files and b in files)
    graph.add_edges_from((a, b) for a, deps in declared.items() for b in deps)
    inferred = sum(1 for a, b in analysis.edges if b not in declared.get(a, []))
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1 or any(graph.has_edge(n, n) for n in component):
            cycle = [a for a, _ in nx.find_cycle(graph.subgraph(component))]
            cycle.append(cycle[0])
            raise PlanError("dependency cycle: " + " -> ".join(cycle), field="files", cycle=cycle)
    costs = {p: estimate_cost(f) for p, f in files.items()}
    priority = bottom_levels(graph, costs)
    levels = topological_levels(graph)
    level_of = {p: i for i, level in enumerate(levels) for p in level}
    default_executor = record.get("options", {}).get("executor", "demo")
    tasks = [
        {
            "task_id": p,
            "path": p,
            "language": f.get("language"),
            "description": f.get("description") or "",
            "depends_on": sorted(graph.successors(p)),
            "content": f.get("content"),
            "cost": costs[p],
            "priority": priority[p],
            "level": level_of[p],
            "executor": f.get("executor") or default_executor,
            "simulate": f.get("simulate"),
        }
        for p, f in files.items()
    ]
    return {
        "plan_id": record["plan_id"],
        "project": record["project"],
        "name": record["name"],
        "tasks": tasks,
        "critical_path": critical_path(graph, costs),
        "levels": levels,
        "inferred_edges": inferred,
        "options": dict(record.get("options") or {}),
        "accepted_at": accepted_at if accepted_at is not None else now_ms(),
        "digest": submission_digest(record),
    }


def reject(record: Mapping[str, Any] | None, error: PlanError) -> dict[str, Any]:
    """The PlanRejected record for a plan that failed validation or has a cycle."""
    plan_id = str((record or {}).get("plan_id") or "unknown")
    return {"plan_id": plan_id, "reason": str(error), "field": error.field,
            "cycle": list(error.cycle), "rejected_at": now_ms(),
            "digest": submission_digest(record) if record else None}
