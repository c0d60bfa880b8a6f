"""Read a user's plan document (YAML or JSON) into a validated PlanSubmitted record."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from agents.planning.rules import validate
from devline.errors import PlanError

LANGUAGES = {".py": "python", ".ts": "typescript", ".tsx": "typescript", ".js": "javascript",
             ".jsx": "javascript", ".mjs": "javascript", ".cjs": "javascript"}
MAX_PLAN_FILE = 256 * 1024 * 1024  # bytes of a plan document read from disk


def now_ms() -> int:
    return int(time.time() * 1000)


def load_plan_file(path: Path, executors: Collection[str] | None = None) -> dict[str, Any]:
    """Read a YAML or JSON plan file into a PlanSubmitted record (validated)."""
    try:
        size = path.stat().st_size
        if size > MAX_PLAN_FILE:
            raise PlanError(f"{path} is {size} bytes, over the {MAX_PLAN_FILE}-byte limit")
        data = path.read_bytes()
    except OSError as exc:
        raise PlanError(f"cannot read plan {path}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(f"{path} is not UTF-8 text (byte {exc.start}: "
                        f"{data[exc.start:exc.start + 4]!r}); save it as UTF-8") from None
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except (ValueError, Exception) as exc:  # yaml.YAMLError is not a ValueError
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise PlanError(f"{path} is not valid {kind}: {exc}") from exc
    return plan_record(raw, executors)


def plan_record(raw: Any, executors: Collection[str] | None = None) -> dict[str, Any]:
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
    validate(record, executors)
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
    """One file entry, shaped (types) as the schema wants; ranges are `validate`'s job."""
    field = f"files[{i}]"
    entry = _mapping(raw, field)
    known = {"path", "language", "description", "depends_on", "content", "cost", "executor",
             "simulate"}
    extra = sorted(set(entry) - known)
    if extra:
        raise PlanError(f"{field}.{extra[0]}: unknown field", field=f"{field}.{extra[0]}")
    path = entry.get("path", "")
    if not isinstance(path, str):
        raise PlanError(f"{field}.path: expected text, got {path!r}", field=f"{field}.path")
    content = entry.get("content")
    if content is not None and not isinstance(content, str):
        raise PlanError(f"{field}.content: expected text", field=f"{field}.content")
    cost = entry.get("cost")
    if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int | float)):
        raise PlanError(f"{field}.cost: expected a number, got {cost!r}", field=f"{field}.cost")
    executor = entry.get("executor")
    if executor is not None and not isinstance(executor, str):
        raise PlanError(f"{field}.executor: expected a name, got {executor!r}",
                        field=f"{field}.executor")
    deps = _list(entry.get("depends_on", []) or [], f"{field}.depends_on")
    if not all(isinstance(d, str) for d in deps):
        raise PlanError(f"{field}.depends_on: expected a list of paths",
                        field=f"{field}.depends_on")
    sim = _mapping(entry.get("simulate"), f"{field}.simulate")
    simulate = None
    if sim:
        try:
            simulate = {
                "duration_s": float(sim.get("duration_s", 0.0)),
                "fail_first": int(sim.get("fail_first", 0)),
                "fail_error": str(sim.get("fail_error", "simulated failure")),
                "retryable": bool(sim.get("retryable", True)),
                "qa_fail_first": int(sim.get("qa_fail_first", 0)),
                "qa_defect": str(sim.get("qa_defect", "same")),
                "fixed_content": (None if sim.get("fixed_content") is None
                                  else str(sim["fixed_content"])),
            }
        except (TypeError, ValueError, OverflowError) as exc:
            raise PlanError(f"{field}.simulate: {exc}", field=f"{field}.simulate") from exc
    description = entry.get("description")
    return {
        "path": path,
        "language": entry.get("language") or LANGUAGES.get(PurePosixPath(path).suffix),
        "description": str(description) if description is not None else "",
        "depends_on": list(deps),
        "content": content,
        "cost": float(cost) if cost is not None else None,
        "executor": executor,
        "simulate": simulate,
    }
