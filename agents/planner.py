"""The planner's logic: load and validate a plan, infer dependencies, accept or reject.

Pure code: a plan dict goes in, a PlanAccepted or PlanRejected record comes out.
"""

from __future__ import annotations

import json
import posixpath
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import networkx as nx

from agents.scheduling.priority import bottom_levels, critical_path, topological_levels
from devline.errors import PlanError, WorkspaceError

EXECUTORS = ("demo", "command", "http", "python")
MAX_CONTENT = 1024 * 1024
_PLAN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_LANGS = {".py": "python", ".ts": "typescript", ".tsx": "typescript", ".js": "javascript",
          ".jsx": "javascript", ".mjs": "javascript", ".cjs": "javascript"}


def now_ms() -> int:
    return int(time.time() * 1000)


def safe_relative(path: str, field: str) -> str:
    """Normalise a plan path; reject absolute paths and paths that escape the workspace."""
    if not isinstance(path, str) or not path.strip():
        raise PlanError(f"{field}: a path is required", field=field)
    if "\\" in path or "\x00" in path:
        raise WorkspaceError(f"{field}: {path!r} must use '/' and no NUL bytes", field=field)
    pure = PurePosixPath(path)
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", path):
        raise WorkspaceError(f"{field}: {path!r} is absolute; plan paths are relative", field=field)
    root = PurePosixPath("/workspace")
    joined = PurePosixPath(posixpath.normpath(str(root / pure)))
    try:
        rel = joined.relative_to(root)
    except ValueError:
        raise WorkspaceError(f"{field}: {path!r} escapes the workspace", field=field) from None
    if str(rel) in ("", "."):
        raise WorkspaceError(f"{field}: {path!r} names the workspace itself", field=field)
    return str(rel)


def load_plan_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON plan file into a PlanSubmitted record (validated)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read plan {path}: {exc.strerror}") from exc
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except (ValueError, Exception) as exc:  # yaml.YAMLError is not a ValueError
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise PlanError(f"{path} is not valid {kind}: {exc}") from exc
    return plan_record(raw)


def plan_record(raw: Any) -> dict[str, Any]:
    """Turn a user's plan document into a validated PlanSubmitted record."""
    if not isinstance(raw, Mapping):
        raise PlanError("a plan is a mapping with 'project', 'name' and 'files'", field="plan")
    known = {"plan_id", "id", "project", "name", "files", "options", "submitted_by"}
    extra = sorted(set(raw) - known)
    if extra:
        raise PlanError(f"unknown field {extra[0]!r} (known: {', '.join(sorted(known))})",
                        field=extra[0])
    plan_id = str(raw.get("plan_id") or raw.get("id") or uuid.uuid4().hex[:12])
    record = {
        "plan_id": plan_id,
        "project": _string(raw.get("project", "default"), "project"),
        "name": _string(raw.get("name", plan_id), "name"),
        "files": [_file(f, i) for i, f in enumerate(_list(raw.get("files"), "files"))],
        "options": {str(k): str(v) for k, v in _mapping(raw.get("options", {}), "options").items()},
        "submitted_at": now_ms(),
        "submitted_by": raw.get("submitted_by"),
    }
    validate(record)
    return record


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PlanError(f"{field}: expected a non-empty string, got {value!r}", field=field)
    return value


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise PlanError(f"{field}: expected a list, got {type(value).__name__}", field=field)
    return value


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PlanError(f"{field}: expected a mapping, got {type(value).__name__}", field=field)
    return value


def _file(raw: Any, i: int) -> dict[str, Any]:
    field = f"files[{i}]"
    entry = _mapping(raw, field)
    known = {"path", "language", "description", "depends_on", "content", "cost", "executor",
             "simulate"}
    extra = sorted(set(entry) - known)
    if extra:
        raise PlanError(f"{field}.{extra[0]}: unknown field", field=f"{field}.{extra[0]}")
    path = safe_relative(entry.get("path", ""), f"{field}.path")
    content = entry.get("content")
    if content is not None and not isinstance(content, str):
        raise PlanError(f"{field}.content: expected text", field=f"{field}.content")
    if content is not None and len(content.encode()) > MAX_CONTENT:
        raise PlanError(f"{field}.content: larger than {MAX_CONTENT} bytes",
                        field=f"{field}.content")
    cost = entry.get("cost")
    if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int | float)
                             or cost < 0):
        raise PlanError(f"{field}.cost: expected a number >= 0, got {cost!r}",
                        field=f"{field}.cost")
    executor = entry.get("executor")
    if executor is not None and executor not in EXECUTORS:
        raise PlanError(f"{field}.executor: {executor!r} is not one of {', '.join(EXECUTORS)}",
                        field=f"{field}.executor")
    deps = [safe_relative(d, f"{field}.depends_on[{j}]")
            for j, d in enumerate(_list(entry.get("depends_on", []) or [], f"{field}.depends_on"))]
    sim = _mapping(entry.get("simulate"), f"{field}.simulate")
    simulate = None
    if sim:
        try:
            simulate = {
                "duration_s": float(sim.get("duration_s", 0.0)),
                "fail_first": int(sim.get("fail_first", 0)),
                "fail_error": str(sim.get("fail_error", "simulated failure")),
                "retryable": bool(sim.get("retryable", True)),
            }
        except (TypeError, ValueError) as exc:
            raise PlanError(f"{field}.simulate: {exc}", field=f"{field}.simulate") from exc
    return {
        "path": path,
        "language": entry.get("language") or _LANGS.get(PurePosixPath(path).suffix),
        "description": str(entry.get("description") or ""),
        "depends_on": deps,
        "content": content,
        "cost": float(cost) if cost is not None else None,
        "executor": executor,
        "simulate": simulate,
    }


def validate(record: Mapping[str, Any]) -> None:
    """Check a PlanSubmitted record: ids, paths, duplicates, declared dependencies."""
    if not _PLAN_ID.match(str(record.get("plan_id", ""))):
        raise PlanError(f"plan_id: {record.get('plan_id')!r} must be 1-128 letters, digits, "
                        "'.', '_', ':' or '-'", field="plan_id")
    files = record.get("files") or []
    if not files:
        raise PlanError("files: a plan needs at least one file", field="files")
    seen: dict[str, int] = {}
    for i, f in enumerate(files):
        path = safe_relative(f["path"], f"files[{i}].path")
        if path in seen:
            raise PlanError(f"files[{i}].path: {path!r} is also files[{seen[path]}]",
                            field=f"files[{i}].path")
        seen[path] = i
    for i, f in enumerate(files):
        for j, dep in enumerate(f.get("depends_on") or []):
            if dep not in seen:
                raise PlanError(f"files[{i}].depends_on[{j}]: {dep!r} is not a file of this plan",
                                field=f"files[{i}].depends_on[{j}]")
            if dep == f["path"]:
                raise PlanError(f"files[{i}].depends_on[{j}]: a file cannot depend on itself",
                                field=f"files[{i}].depends_on[{j}]", cycle=[dep, dep])


def estimate_cost(f: Mapping[str, Any]) -> float:
    """The plan's estimate, else a size-based one (1 unit per KB of carried content)."""
    if f.get("cost") is not None:
        return float(f["cost"])
    content = f.get("content")
    return max(1.0, len(content.encode()) / 1024) if content else 1.0


def accept(record: Mapping[str, Any]) -> dict[str, Any]:
    """Build the PlanAccepted record, or raise PlanError naming the cycle or bad field."""
    from agents.analysis import analyze_sources

    validate(record)
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
        "accepted_at": now_ms(),
    }


def reject(record: Mapping[str, Any] | None, error: PlanError) -> dict[str, Any]:
    """The PlanRejected record for a plan that failed validation or has a cycle."""
    plan_id = str((record or {}).get("plan_id") or "unknown")
    return {"plan_id": plan_id, "reason": str(error), "field": error.field,
            "cycle": list(error.cycle), "rejected_at": now_ms()}
