"""The plan's integration rounds, folded from events. Pure: no Kafka.

When every file is verified and the plan has tests, the plan is *testing*: the edge plans
the shards (`IntegrationStarted`, the assignment of every shard), test workers run them
and report (`IntegrationResult`, one per shard). When every shard has reported:

- nothing failed (flaky tests are reported, not gating): after a full round the plan is
  done; after a round of only the previously failed tests, the full suite runs again;
- real failures: each is attributed to a file (best first); those files are reopened as
  failed versions with the failing tests as evidence, so the fix loop's policy (cap, no
  progress) decides their fix tasks. Once they are verified again, the failed tests run
  (round n+1, scope `failed`), then the full suite.

State lives in the plan header under `integration`; it is bounded (failures kept per
round, outputs clipped) and a finished run keeps only its summary.
"""

from __future__ import annotations

import hashlib
from typing import Any

from agents.scheduling.base import found_wanting
from agents.scheduling.model import Cmd, Command

TESTING = "testing"
FAILURES_KEPT = 50      # failures remembered per round (the rest are counted)
OUTPUT_KEPT = 4096      # characters of a failure's output kept in the header
HISTORY_KEPT = 10       # finished rounds remembered per plan
INTEGRATION_ERROR = "integration"  # TaskFailed.error_type of a file reopened by a test


def wanted(header: dict[str, Any]) -> bool:
    """Whether the plan runs integration tests once every file is verified."""
    options = header.get("options") or {}
    return int(header.get("tests") or 0) > 0 and options.get("integration", "on") != "off"


def begin(header: dict[str, Any], scope: str, at: int) -> None:
    """Every file is verified: the next round starts (the edge plans its shards)."""
    previous = header.get("integration") or {}
    header["status"] = TESTING
    header["integration"] = {
        "round": int(previous.get("round") or 0) + 1, "scope": scope, "run_id": None,
        "failed_tests": list(previous.get("failed_tests") or []) if scope == "failed" else [],
        "shards": {}, "tests": 0, "ready_at": at, "started_at": None, "failures": [],
        "failed": 0, "flaky": [], "passed": 0, "errors": [],
        "history": list(previous.get("history") or []),
    }


def commands(header: dict[str, Any], fresh: bool) -> list[Command]:
    """What a testing plan needs from the edge: its shards planned, until they are."""
    integ = header.get("integration") or {}
    if header.get("status") == TESTING and integ and integ.get("run_id") is None:
        return [Command(Cmd.INTEGRATE, header["plan_id"], fresh=fresh)]
    return []


def run_id(plan_id: str, round_: int, shards: list[dict[str, Any]]) -> str:
    """Names the run by its plan, round and assignment: two different assignments made for
    one round (a recomputation after a crash) are two runs, and the fold keeps the first."""
    digest = hashlib.sha256(repr((plan_id, round_, [(s["index"], list(s["tests"]))
                                                    for s in shards])).encode())
    return digest.hexdigest()[:16]


def started(header: dict[str, Any], ev: dict[str, Any], newer: bool) -> bool:
    """Apply an `IntegrationStarted`; True when it is the plan's current run."""
    integ = dict(header.get("integration") or {})  # copied: the table's value is shared
    if (newer and header.get("status") == TESTING and integ.get("run_id") is None
            and integ.get("round") == ev["round"]):
        integ.update(run_id=ev["run_id"], started_at=ev["at"], tests=int(ev["tests_total"]),
                     shards={str(s["index"]): None for s in ev["shards"]})
        header["integration"] = integ
    return bool(integ) and integ.get("run_id") == ev["run_id"]


def shard_reported(header: dict[str, Any], ev: dict[str, Any]) -> bool:
    """Apply one shard's `IntegrationResult`; True when it completed the run."""
    integ = dict(header.get("integration") or {})
    shards = dict(integ.get("shards") or {})
    key = str(ev["shard"])
    if integ.get("run_id") != ev["run_id"] or key not in shards or shards[key] is not None:
        return False
    failures = list(ev.get("failures") or [])
    shards[key] = "failed" if failures or ev.get("error") else "passed"
    integ["failed"] = int(integ.get("failed") or 0) + len(failures)
    integ["passed"] = int(integ.get("passed") or 0) + max(
        0, int(ev.get("tests") or 0) - len(failures) - len(ev.get("flaky_tests") or []))
    integ["flaky"] = sorted(set(integ.get("flaky") or []) | set(ev.get("flaky_tests") or []))
    kept = list(integ.get("failures") or [])
    for f in failures:
        if len(kept) < FAILURES_KEPT:
            kept.append({"test_id": f["test_id"], "message": f["message"][:500],
                         "output": f["output"][-OUTPUT_KEPT:], "files": list(f["files"]),
                         "command": ev.get("command") or "", "at": ev["at"]})
    integ["failures"] = kept
    if ev.get("error"):
        integ["errors"] = [*(integ.get("errors") or []),
                           f"shard {ev['shard']}: {str(ev['error'])[:500]}"][-FAILURES_KEPT:]
    integ["wall_ms"] = max(int(integ.get("wall_ms") or 0), int(ev["at"]) - int(
        integ.get("started_at") or ev["at"]))
    integ["shards"] = shards
    header["integration"] = integ
    return all(v is not None for v in shards.values())


def finish(header: dict[str, Any], tasks: dict[str, Any], at: int
           ) -> tuple[str, list[str]]:
    """A run whose shards have all reported: ("done" | "next" | "fix" | "stalled", task ids
    to reopen). Mutates the header (and, for "fix", nothing else: see `reopen`)."""
    integ = header["integration"] = dict(header["integration"])
    summary = {k: integ.get(k) for k in ("round", "scope", "run_id", "tests", "passed",
                                         "failed", "flaky", "wall_ms")}
    integ["history"] = [*(integ.get("history") or []), summary][-HISTORY_KEPT:]
    failures = integ.get("failures") or []
    if not failures and integ.get("errors"):
        # A shard that could not run its tests proves nothing either way: the PM decides.
        integ["shards"] = {}
        header["status"] = "stalled"
        header["reason"] = "integration tests could not run: " + "; ".join(integ["errors"])
        return "stalled", []
    if not failures:
        if integ.get("scope") == "failed":
            begin(header, "full", at)
            return "next", []
        integ["shards"] = {}
        integ["failures"] = []
        return "done", []
    by_path = {t["spec"]["path"]: tid for tid, t in tasks.items()}
    targets: dict[str, list[dict[str, Any]]] = {}
    for f in failures:
        for path in f["files"]:
            tid = by_path.get(path)
            if tid is not None and tasks[tid]["status"] == "done":
                targets.setdefault(tid, []).append(f)
                break
    integ["failed_tests"] = sorted({f["test_id"] for f in failures})
    integ["reopened"] = sorted(targets)
    integ["shards"] = {}
    if not targets:
        header["status"] = "stalled"
        header["reason"] = ("integration tests failed and no failure could be attributed to "
                            "a verified file of the plan: " + ", ".join(
                                integ["failed_tests"][:5]))
        return "stalled", []
    integ["pending"] = {tid: [f["test_id"] for f in fs] for tid, fs in targets.items()}
    header["status"] = "running"
    return "fix", sorted(targets)


def failure_for(task_id: str, task: dict[str, Any], header: dict[str, Any]
                ) -> dict[str, Any]:
    """The failed-version record of a verified file that failing tests point at: the same
    shape as a worker's QA failure, so the fix loop takes it from there."""
    integ = header["integration"]
    mine = [f for f in integ.get("failures") or [] if task_id in integ.get("pending", {})
            and f["test_id"] in integ["pending"][task_id]]
    ids = sorted(f["test_id"] for f in mine)
    fingerprint = hashlib.sha256(("integration\x1f" + "\x1f".join(ids)).encode()
                                 ).hexdigest()[:16]
    first = mine[0] if mine else {"test_id": "?", "message": "", "output": "", "command": ""}
    output = "\n\n".join(f"{f['test_id']}\n{f['output']}" for f in mine)
    return found_wanting(
        task_id, task, plan_id=header["plan_id"],
        event_id=f"integration-{integ['run_id']}-{task_id}", source="integration",
        error=f"integration: {len(ids)} test(s) failed, first {first['test_id']}: "
              f"{first['message'][:200]}",
        error_type=INTEGRATION_ERROR, fingerprint=fingerprint, output=output,
        at=int(first.get("at") or 0), check="pytest (integration)",
        command=first.get("command") or "", findings=len(ids))
