"""The one validation of a plan: the CLI runs it before producing, the planner runs it on
whatever arrives on devline.plans (from any producer, in any language). A plan that passes
can be carried out; one that does not is refused or rejected with the field named.

Limits (also in the README):
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
from collections.abc import Collection, Mapping
from pathlib import PurePosixPath
from typing import Any

from devline.errors import PlanError, WorkspaceError

EXECUTORS = ("demo", "command", "http", "python")
MAX_FILES = 20_000
MAX_CONTENT = 1024 * 1024          # bytes of carried content per file
MAX_DESCRIPTION = 64 * 1024        # characters of description per file
MAX_PLAN_TEXT = 64 * 1024 * 1024   # bytes of descriptions and contents in one plan
MAX_PATH = 512                     # characters of a file path or project
MAX_NAME = 200                     # characters of a plan name
MAX_COST = 1e9                     # a file's cost estimate
MAX_SIM_DURATION = 86_400.0        # seconds a demo task may be told to take
MAX_FAIL_FIRST = 1000
PLAN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

__doc__ = (__doc__ or "") + f"""
    files per plan            {MAX_FILES}
    content per file          {MAX_CONTENT} bytes
    description per file      {MAX_DESCRIPTION} characters
    descriptions + contents   {MAX_PLAN_TEXT} bytes per plan (sent by hash past 1 MiB)
    path / project            {MAX_PATH} characters, relative, inside the workspace
    cost                      a finite number in [0, {MAX_COST:g}]
    simulate.duration_s       a finite number in [0, {MAX_SIM_DURATION:g}]
    simulate.qa_fail_first    a whole number in [0, {MAX_FAIL_FIRST}]
    options.qa.fix_attempts   a whole number in [0, 10]
    executors                 {', '.join(EXECUTORS)}; the planner accepts only those the
                              operator's executor config can run
"""


def safe_relative(path: Any, field: str) -> str:
    """Normalise a plan path; reject absolute paths and paths that escape the workspace."""
    if not isinstance(path, str) or not path.strip():
        raise PlanError(f"{field}: a path is required", field=field)
    if len(path) > MAX_PATH:
        raise PlanError(f"{field}: longer than {MAX_PATH} characters", field=field)
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


def _number(value: Any, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not low <= value <= high:
        raise PlanError(f"{field}: expected a finite number in [{low:g}, {high:g}], "
                        f"got {value!r}", field=field)
    return float(value)


def _executor(name: Any, field: str, known: Collection[str] | None) -> None:
    if name not in EXECUTORS:
        raise PlanError(f"{field}: {name!r} is not one of {', '.join(EXECUTORS)}", field=field)
    if known is not None and name not in known:
        raise PlanError(f"{field}: executor {name!r} is not configured on this cluster "
                        f"(available: {', '.join(sorted(known)) or 'none'}; the operator "
                        "sets them in DEVLINE_EXECUTOR_CONFIG)", field=field)


QA_DEFECTS = ("same", "varies", "regress")
QA_CHAIN = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
MAX_FIX_ATTEMPTS = 10
MAX_SHARDS = 64
MAX_FIXED_CONTENT = 16 * 1024  # simulate.fixed_content travels inline with the task


def _options(options: Mapping[str, Any], known: Collection[str] | None) -> None:
    if "qa" in options and not QA_CHAIN.match(str(options["qa"])):
        raise PlanError(f"options.qa: {options['qa']!r} is not a checker chain name (default, "
                        "strict, syntax, off, or one the operator configured)",
                        field="options.qa")
    if "qa.fix_attempts" in options:
        raw = str(options["qa.fix_attempts"])
        if not raw.isdigit() or int(raw) > MAX_FIX_ATTEMPTS:
            raise PlanError(f"options.qa.fix_attempts: expected a whole number 0-"
                            f"{MAX_FIX_ATTEMPTS}, got {raw!r}", field="options.qa.fix_attempts")
    if options.get("release", "verified") not in ("verified", "written"):
        raise PlanError(f"options.release: expected verified or written, got "
                        f"{options['release']!r}", field="options.release")
    if options.get("integration", "on") not in ("on", "off"):
        raise PlanError(f"options.integration: expected on or off, got "
                        f"{options['integration']!r}", field="options.integration")
    if "integration.shards" in options:
        raw = str(options["integration.shards"])
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_SHARDS:
            raise PlanError(f"options.integration.shards: expected a whole number 1-"
                            f"{MAX_SHARDS}, got {raw!r}", field="options.integration.shards")
    if "executor" in options:
        _executor(options["executor"], "options.executor", known)
    if "budget.tokens" in options:
        raw = str(options["budget.tokens"])
        if not raw.isdigit():
            raise PlanError(f"options.budget.tokens: expected a whole number >= 0, got {raw!r}",
                            field="options.budget.tokens")
    if "budget.cost" in options:
        try:
            cost = float(options["budget.cost"])
        except ValueError:
            cost = math.nan
        _number(cost, "options.budget.cost", 0.0, MAX_COST)


def validate(record: Mapping[str, Any], executors: Collection[str] | None = None) -> None:
    """Check a PlanSubmitted record; raise `PlanError` naming the first bad field.

    `executors` are the executor names this cluster can run (the planner knows them from
    the operator's config); None checks only that names are executor types.
    """
    if not PLAN_ID.match(str(record.get("plan_id", ""))):
        raise PlanError(f"plan_id: {record.get('plan_id')!r} must be 1-128 letters, digits, "
                        "'.', '_', ':' or '-'", field="plan_id")
    safe_relative(record.get("project"), "project")
    name = record.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise PlanError(f"name: expected 1-{MAX_NAME} characters, got {name!r}", field="name")
    options = record.get("options") or {}
    _options(options, executors)
    files = record.get("files") or []
    if not files:
        raise PlanError("files: a plan needs at least one file", field="files")
    if len(files) > MAX_FILES:
        raise PlanError(f"files: {len(files)} files, over the limit of {MAX_FILES} per plan",
                        field="files")
    seen: dict[str, int] = {}
    text = 0
    for i, f in enumerate(files):
        field = f"files[{i}]"
        path = safe_relative(f.get("path"), f"{field}.path")
        if path in seen:
            raise PlanError(f"{field}.path: {path!r} is also files[{seen[path]}]",
                            field=f"{field}.path")
        seen[path] = i
        content = f.get("content")
        if content is not None and len(content.encode("utf-8", "surrogatepass")) > MAX_CONTENT:
            raise PlanError(f"{field}.content: larger than {MAX_CONTENT} bytes",
                            field=f"{field}.content")
        if len(f.get("description") or "") > MAX_DESCRIPTION:
            raise PlanError(f"{field}.description: longer than {MAX_DESCRIPTION} characters",
                            field=f"{field}.description")
        text += len(f.get("description") or "") + len(content or "")
        if text > MAX_PLAN_TEXT:
            raise PlanError(f"files: descriptions and contents reach {MAX_PLAN_TEXT} bytes "
                            f"by {field}, over the limit per plan; split the plan",
                            field="files")
        if f.get("cost") is not None:
            _number(f["cost"], f"{field}.cost", 0.0, MAX_COST)
        if f.get("executor") is not None:
            _executor(f["executor"], f"{field}.executor", executors)
        sim = f.get("simulate")
        if sim:
            _number(sim.get("duration_s", 0.0), f"{field}.simulate.duration_s", 0.0,
                    MAX_SIM_DURATION)
            _number(sim.get("fail_first", 0), f"{field}.simulate.fail_first", 0,
                    MAX_FAIL_FIRST)
            _number(sim.get("qa_fail_first", 0), f"{field}.simulate.qa_fail_first", 0,
                    MAX_FAIL_FIRST)
            if len(str(sim.get("fixed_content") or "").encode()) > MAX_FIXED_CONTENT:
                raise PlanError(f"{field}.simulate.fixed_content: over {MAX_FIXED_CONTENT} "
                                "bytes (it travels inline with the task)",
                                field=f"{field}.simulate.fixed_content")
            if sim.get("qa_defect", "same") not in QA_DEFECTS:
                raise PlanError(f"{field}.simulate.qa_defect: expected one of "
                                f"{', '.join(QA_DEFECTS)}, got {sim.get('qa_defect')!r}",
                                field=f"{field}.simulate.qa_defect")
    for i, f in enumerate(files):
        for j, dep in enumerate(f.get("depends_on") or []):
            where = f"files[{i}].depends_on[{j}]"
            dep = safe_relative(dep, where)
            if dep not in seen:
                raise PlanError(f"{where}: {dep!r} is not a file of this plan", field=where)
            if dep == f["path"]:
                raise PlanError(f"{where}: a file cannot depend on itself", field=where,
                                cycle=[dep, dep])


def submission_digest(record: Mapping[str, Any]) -> str:
    """What a plan asks for, hashed: equal for the same plan submitted twice (when and by
    whom it was submitted do not count, nor whether its files came inline or by reference)."""
    body = {k: v for k, v in record.items() if k not in ("submitted_at", "submitted_by")
            and not (k == "files_ref" and v is None)}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
