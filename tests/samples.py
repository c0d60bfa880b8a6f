"""Sample records for every event type, as other code builds them (plain dicts, int ms).

`sample_event("PlanSubmitted")` gives a fresh valid record; `fill_defaults` gives the record
as a decoder returns it.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient

NOW_MS = 1_764_000_000_000
PLAN = "plan-7f3a"


def simulate(**overrides: Any) -> dict[str, Any]:
    """A demo-executor `Simulate` block."""
    base = {"duration_s": 0.25, "fail_first": 1, "fail_error": "boom", "retryable": True}
    return {**base, **overrides}


def plan_file(index: int, *, depends_on: list[str] | None = None) -> dict[str, Any]:
    """One `PlanFile`; every other file leaves optional fields out or null."""
    path = f"src/app/module_{index}.py"
    if index % 2:
        return {"path": path, "depends_on": depends_on or []}
    return {
        "path": path,
        "language": "python",
        "description": f"Module {index}: parse, validate and store widgets. ünïcödé ✓",
        "depends_on": depends_on or [],
        "content": f"def f{index}(x: int) -> int:\n    return x * {index}\n" * 8,
        "cost": 1.5 + index,
        "executor": "demo",
        "simulate": simulate(duration_s=0.01 * index),
    }


def plan_submitted(files: int = 3) -> dict[str, Any]:
    """A `PlanSubmitted` with `files` files, each depending on the one before."""
    paths = [f"src/app/module_{i}.py" for i in range(files)]
    return {
        "plan_id": PLAN,
        "project": "widgets",
        "name": "Widget service",
        "files": [plan_file(i, depends_on=paths[:i][-1:]) for i in range(files)],
        "options": {"executor": "demo", "budget_usd": "3.50"},
        "submitted_at": NOW_MS,
        "submitted_by": "pm-agent",
    }


def _task_spec(index: int) -> dict[str, Any]:
    return {
        "task_id": f"t{index}",
        "path": f"src/app/module_{index}.py",
        "language": "python" if index % 2 == 0 else None,
        "description": "write it",
        "depends_on": [f"t{index - 1}"] if index else [],
        "content": None,
        "cost": 1.0,
        "priority": 10.0 - index,
        "level": index,
        "executor": "demo",
        "simulate": simulate() if index == 0 else None,
    }


def _common(**extra: Any) -> dict[str, Any]:
    return {
        "event_id": "0b0e6a4c1f2d4e7a9c8b7a6f5e4d3c2b",
        "plan_id": PLAN,
        "task_id": "t1",
        "path": "src/app/module_1.py",
        **extra,
    }


_BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "PlanSubmitted": plan_submitted,
    "PlanAccepted": lambda: {
        "plan_id": PLAN,
        "project": "widgets",
        "name": "Widget service",
        "tasks": [_task_spec(i) for i in range(3)],
        "critical_path": ["t0", "t1", "t2"],
        "levels": [["t0"], ["t1"], ["t2"]],
        "inferred_edges": 2,
        "options": {"executor": "demo"},
        "accepted_at": NOW_MS + 5,
    },
    "PlanRejected": lambda: {
        "plan_id": PLAN,
        "reason": "dependency cycle",
        "field": "files[1].depends_on",
        "cycle": ["a.py", "b.py", "a.py"],
        "rejected_at": NOW_MS + 5,
    },
    "PlanCompleted": lambda: {
        "plan_id": PLAN,
        "files": 3,
        "executor_runs": 4,
        "cache_hits": 1,
        "failed": 0,
        "makespan_ms": 12_345,
        "completed_at": NOW_MS + 12_345,
    },
    "BoardEntry": lambda: {
        "plan_id": PLAN, "task_id": "calc/parser.py", "seq": 42, "status": "dispatched",
        "path": "calc/parser.py", "project": "calc", "kind": "dev", "priority": 3.5,
        "attempt": 1, "executor": "demo", "dispatch_id": "d-1", "worker_id": "w-1",
        "outcome": None, "retry_after_s": None, "budgeted": False, "at": NOW_MS + 20,
    },
    "BreakerState": lambda: {
        "executor": "demo", "state": '{"breaker": {}, "limiter": {}}', "at": NOW_MS + 30,
    },
    "PlanRetired": lambda: {
        "event_id": "r-1",
        "plan_id": PLAN,
        "status": "done",
        "finished_at": NOW_MS + 12_345,
        "retired_at": NOW_MS + 86_400_000,
    },
    "TaskReady": lambda: _common(
        kind="dev", attempt=1, priority=9.5, cache_key="ck-1", ready_at=NOW_MS + 10
    ),
    "TaskDispatched": lambda: _common(
        kind="fix",
        attempt=2,
        worker_id="w-1",
        partition=7,
        dispatch_id="d-1",
        dispatched_at=NOW_MS + 11,
    ),
    "WorkItem": lambda: {
        "plan_id": PLAN,
        "task_id": "t1",
        "path": "src/app/module_1.py",
        "language": "python",
        "description": "write module 1",
        "content": None,
        "executor": "demo",
        "attempt": 1,
        "kind": "dev",
        "priority": 9.5,
        "cache_key": "ck-1",
        "dispatch_id": "d-1",
        "worker_id": "w-1",
        "simulate": simulate(),
        "context": [
            {"path": "src/app/module_0.py", "content_hash": "ab" * 32, "content": "x = 1\n"},
            {"path": "src/app/base.py", "content_hash": "cd" * 32, "interface": "class Base"},
        ],
        "options": {"model": "small"},
        "dispatched_at": NOW_MS + 11,
    },
    "TaskCompleted": lambda: _common(
        attempt=1,
        worker_id="w-1",
        dispatch_id="d-1",
        executor="demo",
        cache_key="ck-1",
        content="print('hi')\n",
        content_hash="ef" * 32,
        size=12,
        cached=False,
        started_at=NOW_MS + 12,
        finished_at=NOW_MS + 300,
        tokens=1234,
        cost=0.0021,
    ),
    "TaskFailed": lambda: _common(
        attempt=1,
        worker_id="w-1",
        dispatch_id="d-1",
        executor="http",
        error="HTTP 429 Too Many Requests",
        error_type="http_429",
        retryable=True,
        fingerprint="f00d",
        output="rate limited",
        retry_after_s=2.0,
        started_at=NOW_MS + 12,
        finished_at=NOW_MS + 40,
    ),
    "TaskRetryScheduled": lambda: _common(
        attempt=2, delay_ms=2000, due_at=NOW_MS + 2040, reason="http_429"
    ),
    "TaskDeadLettered": lambda: _common(
        attempts=3, reason="out of attempts", fingerprint="f00d", at=NOW_MS + 9000
    ),
    "TaskRedriveRequested": lambda: {
        "event_id": "rr-1",
        "plan_id": PLAN,
        "task_id": "t1",
        "attempt": 3,
        "dlq_partition": 0,
        "dlq_offset": 17,
        "requested_by": "ana@box-1",
        "at": NOW_MS + 10_000,
    },
    "QAResult": lambda: _common(
        passed=False,
        checks=[
            {"name": "syntax", "passed": True},
            {"name": "lint", "passed": False, "message": "E501 line too long"},
        ],
        at=NOW_MS + 500,
    ),
    "Escalation": lambda: {
        "event_id": "e-1",
        "plan_id": PLAN,
        "task_id": None,
        "kind": "no_progress",
        "reason": "nothing finished in 10 minutes",
        "attempts": 0,
        "errors": [],
        "last_output": None,
        "at": NOW_MS + 600_000,
    },
    "MetricPoint": lambda: {
        "source": "scheduler",
        "name": "backlog",
        "value": 17.0,
        "labels": {"plan_id": PLAN, "kind": "dev"},
        "at": NOW_MS,
    },
    "MetricAggregate": lambda: {
        "key": "backlog||60000|1700000040000",
        "metric": "backlog",
        "dims": {},
        "window_start": 1_700_000_040_000,
        "window_size_ms": 60_000,
        "count": 3,
        "sum": 51.0,
        "min": 15.0,
        "max": 19.0,
        "p50": 17.0,
        "p95": 19.0,
        "p99": 19.0,
        "sketch": '{"alpha": 0.01}',
    },
    "WorkerHeartbeat": lambda: {
        "worker_id": "w-1",
        "host": "box-1",
        "pid": 4242,
        "state": "busy",
        "capacity": 2,
        "running": ["t1"],
        "partitions": [0, 3, 11],
        "at": NOW_MS,
    },
    "CircuitTransition": lambda: {
        "event_id": "c-1",
        "breaker": "http",
        "from_state": "closed",
        "to_state": "open",
        "reason": "error rate 0.8 > 0.5",
        "error_rate": 0.8,
        "calls": 20,
        "at": NOW_MS,
    },
    "IntegrationResult": lambda: {
        "event_id": "i-1",
        "plan_id": PLAN,
        "run_id": "r-1",
        "shard": 1,
        "shards": 4,
        "passed": False,
        "failed_tests": ["tests/test_api.py::test_get"],
        "implicated_files": ["src/app/module_1.py"],
        "duration_ms": 5400,
        "at": NOW_MS,
    },
    "IntegrationStarted": lambda: {
        "event_id": "is-1",
        "plan_id": PLAN,
        "run_id": "r-1",
        "round": 1,
        "scope": "full",
        "project": "app",
        "files_ref": "a" * 64,
        "tests_total": 3,
        "shards": [{"index": 0, "tests": ["tests/test_api.py::test_get",
                                          "tests/test_api.py::test_put"], "expected_s": 2.5},
                   {"index": 1, "tests": ["tests/test_db.py::test_q"], "expected_s": 2.0}],
        "at": NOW_MS,
    },
    "TestShard": lambda: {
        "event_id": "ts-1",
        "plan_id": PLAN,
        "run_id": "r-1",
        "round": 1,
        "shard": 1,
        "shards": 2,
        "tests": ["tests/test_db.py::test_q"],
        "project": "app",
        "files_ref": "a" * 64,
        "sent_at": NOW_MS,
    },
    "DeploymentEvent": lambda: {
        "event_id": "dep-1",
        "plan_id": PLAN,
        "deployment_id": "deploy-1",
        "stage_percent": 25,
        "status": "baking",
        "analysis": None,
        "at": NOW_MS,
    },
    "RolloutStarted": lambda: {
        "event_id": "rs-1", "plan_id": PLAN, "revision": "r2", "stable_revision": "r1",
        "spec_json": '{"steps": [50, 100], "bake_s": [2, 2], "interval_s": 1, '
                     '"deadline_s": 30, "metrics": [], "judge": null}',
        "options": {"rollout.steps": "50,100"}, "at": NOW_MS,
    },
    "RolloutDeployDone": lambda: {
        "event_id": "rd-1", "plan_id": PLAN, "run": "r2#1", "step": 0, "weight": 50,
        "rollback": None, "target": "sim", "at": NOW_MS,
    },
    "RolloutDeployFailed": lambda: {
        "event_id": "rf-1", "plan_id": PLAN, "run": "r2#1", "step": 0, "weight": 0,
        "rollback": 1, "reason": "exit code 3", "target": "deploy", "at": NOW_MS,
    },
    "RolloutAnalysisMeasured": lambda: {
        "event_id": "ra-1", "plan_id": PLAN, "run": "r2#1", "step": 0, "round": 1,
        "metric": "error_rate", "measurement": {"value": 0.01, "samples": 120, "error": None},
        "source": "sim", "at": NOW_MS,
    },
    "RolloutComparisonMeasured": lambda: {
        "event_id": "rc-1", "plan_id": PLAN, "run": "r2#1", "step": 1,
        "samples": [{"metric": "latency", "canary": [12.5, 13.0], "stable": [12.0, 11.5]}],
        "at": NOW_MS,
    },
    "RolloutTimerFired": lambda: {
        "event_id": "rt-1", "plan_id": PLAN, "run": "r2#1", "kind": "bake",
        "due_at": NOW_MS, "at": NOW_MS + 3,
    },
    "RolloutControl": lambda: {
        "event_id": "rk-1", "plan_id": PLAN, "action": "pause", "by": "ann@host",
        "reason": "looking at the dashboards", "at": NOW_MS,
    },
    "RolloutSuperseded": lambda: {
        "event_id": "rx-1", "plan_id": PLAN, "new_revision": "r3", "at": NOW_MS,
    },
    "RolloutFixRequested": lambda: {
        "event_id": "rfx-1", "plan_id": PLAN, "revision": "r2", "stable_revision": "r1",
        "run": "r2#1", "paths": ["app/db.py"], "reason": "error_rate failed: 0.3 > 0.05",
        "evidence": '{"percent": 25}', "at": NOW_MS,
    },
    "RolloutAction": lambda: {
        "event_id": "ac-1", "plan_id": PLAN, "kind": "set_weight", "run": "r2#1",
        "data_json": '{"percent": 50}', "outcome": "done", "at": NOW_MS,
    },
    "OpsDecision": lambda: {
        "decision_id": "o-1",
        "plan_id": None,
        "action": "scale",
        "reason": "backlog 40 > 4 per worker",
        "params": {"replicas": "6"},
        "at": NOW_MS,
    },
}

EVENT_TYPES = sorted(_BUILDERS)


def sample_event(event_type: str) -> dict[str, Any]:
    """A fresh, valid record of `event_type` (a new dict each call, safe to mutate)."""
    return copy.deepcopy(_BUILDERS[event_type]())


def fill_defaults(schema: Any, datum: Any, named: dict[str, Any] | None = None) -> Any:
    """`datum` as a decoder returns it: missing record fields get their schema defaults.

    `schema` is a fastavro-parsed schema (named types referenced by full name).
    """
    if named is None:
        named = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}
    if isinstance(schema, str):
        return fill_defaults(named[schema], datum, named) if schema in named else datum
    if isinstance(schema, list):
        if datum is None:
            return None
        branches = [b for b in schema if b != "null"]
        return fill_defaults(branches[0], datum, named) if len(branches) == 1 else datum
    kind = schema["type"]
    if kind == "record":
        out = {}
        for field in schema["fields"]:
            value = datum[field["name"]] if field["name"] in datum else field["default"]
            out[field["name"]] = fill_defaults(field["type"], copy.deepcopy(value), named)
        return out
    if kind == "array":
        return [fill_defaults(schema["items"], item, named) for item in datum]
    if kind == "map":
        return {k: fill_defaults(schema["values"], v, named) for k, v in datum.items()}
    return datum


def zz(value: int) -> bytes:
    """Avro zig-zag varint (64-bit), for hand-crafted bytes."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def avro_str(text: str) -> bytes:
    """Avro string: length varint, then UTF-8."""
    raw = text.encode()
    return zz(len(raw)) + raw


def mock_registry() -> SchemaRegistryClient:
    """A fresh in-memory schema registry (confluent-kafka's `mock://` client)."""
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
