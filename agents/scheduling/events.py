"""What a decodable event must also satisfy before the fold may apply it.

The schema checks types; these rules check meaning. An event that breaks them (a plan
whose tasks depend on tasks it does not have, a path outside the workspace, a cycle) is
invalid input: it goes to the dead-letter topic with the reason, like undecodable bytes.
Pure functions: no Kafka.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from agents.planning.rules import EXECUTORS, safe_relative
from devline.errors import PlanError


def invalid(event_type: str, record: dict[str, Any]) -> str | None:
    """Why `record` cannot be applied, or None when it can."""
    if event_type == "PlanAccepted":
        return _plan(record)
    if "attempt" in record and record["attempt"] is not None and record["attempt"] < 1:
        return f"attempt {record['attempt']} is not a positive number"
    return None


def _plan(record: dict[str, Any]) -> str | None:
    try:
        safe_relative(record["project"], "project")
        ids: set[str] = set()
        for i, task in enumerate(record["tasks"]):
            if task["task_id"] in ids:
                return f"tasks[{i}]: task id {task['task_id']!r} appears twice"
            ids.add(task["task_id"])
            safe_relative(task["path"], f"tasks[{i}].path")
            if task["executor"] not in EXECUTORS:
                return f"tasks[{i}]: unknown executor {task['executor']!r}"
    except PlanError as exc:
        return str(exc)
    for i, task in enumerate(record["tasks"]):
        for dep in task["depends_on"]:
            if dep not in ids:
                return f"tasks[{i}] ({task['task_id']}) depends on {dep!r}, not a task of the plan"
            if dep == task["task_id"]:
                return f"tasks[{i}] ({task['task_id']}) depends on itself"
    if _has_cycle(record["tasks"]):
        return "the tasks' dependencies form a cycle"
    return None


def _has_cycle(tasks: list[dict[str, Any]]) -> bool:
    waiting = {t["task_id"]: len(set(t["depends_on"])) for t in tasks}
    dependents: dict[str, list[str]] = {t["task_id"]: [] for t in tasks}
    for t in tasks:
        for dep in set(t["depends_on"]):
            dependents[dep].append(t["task_id"])
    ready = deque(t for t, n in waiting.items() if n == 0)
    seen = 0
    while ready:
        tid = ready.popleft()
        seen += 1
        for d in dependents[tid]:
            waiting[d] -= 1
            if waiting[d] == 0:
                ready.append(d)
    return seen != len(tasks)
