"""Typed plan state and the commands the fold hands to the edge.

Records are TypedDicts so they stay plain JSON in Faust tables and changelogs; statuses and
command kinds are enums, and every consumer of a command kind matches it exhaustively
(`assert_never`), so a new kind nobody handles fails the type check and a test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NotRequired, TypedDict


class TaskStatus(StrEnum):
    WAITING = "waiting"        # some dependency not done
    READY = "ready"            # may be dispatched
    DISPATCHED = "dispatched"  # handed to a worker
    FAILED = "failed"          # last attempt failed; waiting for the retry decision
    RETRY_WAIT = "retry_wait"  # retry scheduled, not yet due
    DONE = "done"
    DEAD = "dead"              # dead-lettered; dependents stay held


class PlanStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    STALLED = "stalled"        # a task is dead; its dependents are held for the PM
    TESTING = "testing"        # every file verified; the integration tests run
    REJECTED = "rejected"


class TaskSpec(TypedDict):
    """One file of an accepted plan, as the planner resolved it."""

    task_id: str
    path: str
    language: str | None
    description: str
    depends_on: list[str]
    content: str | None
    cost: float
    priority: float
    level: int
    executor: str
    simulate: dict[str, Any] | None
    brief: str | None          # sha256 of description + content in the artifact store


class TaskRecord(TypedDict):
    """One task's state. `seq` is the log position of the last event applied to it."""

    spec: TaskSpec
    dependents: list[str]
    remaining: int
    status: str
    attempt: int
    attempt_base: int          # attempts before the last redrive (a redrive is a new budget)
    kind: str                  # dev | fix
    dispatch_id: str | None
    worker_id: str | None
    partition: int | None
    content_hash: str | None
    size: int
    cache_key: str | None
    cached: bool
    completed_at: int | None
    errors: list[str]          # fingerprints of recent failures (no-progress detection)
    last_failure: dict[str, Any] | None
    due_at: int | None
    seq: int
    # The fix loop (agents.scheduling.fixes); absent in records written before it.
    fixes: NotRequired[list[dict[str, Any]]]      # QA-failed versions, oldest first
    fix_base: NotRequired[dict[str, Any] | None]  # the version the next fix starts from
    fix_count: NotRequired[int]                   # QA-failed versions so far
    qa: NotRequired[dict[str, Any] | None]        # the verified version's checks
    # When dependents start and re-run (agents.scheduling.release).
    counted_seq: NotRequired[int | None]   # the event that counted it for its dependents
    built_iface: NotRequired[str | None]   # interface hash dependents were built against
    prior_iface: NotRequired[str | None]   # the one before the last completion
    stale_seq: NotRequired[int | None]     # running against a dependency since replaced
    rerun_seq: NotRequired[int | None]     # the completion that sent it back to run again
    rerun_from: NotRequired[str | None]    # its status then (done or dispatched)
    # A test file failing in a module it imports (agents.scheduling.blame).
    blocked_on: NotRequired[str | None]    # the module it waits for
    blocked: NotRequired[list[str]]        # test files waiting for this module
    reopened_seq: NotRequired[int | None]  # the event that reopened this verified module
    unblocked_seq: NotRequired[int | None]


class PlanHeader(TypedDict):
    """A plan's summary. `seq` is the log position of the last event applied to it."""

    plan_id: str
    project: str
    name: str
    status: str
    accepted_at: int
    completed_at: int | None
    total: int
    done: int
    dead: int
    cache_hits: int
    executor_runs: int
    tokens: int
    cost: float
    options: dict[str, str]
    reported: bool
    seq: int
    reason: NotRequired[str]


class Cmd(StrEnum):
    """What the edge must do because of the state an event left behind."""

    RELEASE = "release"              # a ready task: cache lookup, then the dispatch queue
    SEND_WORK = "send_work"          # a logged dispatch: put its work item on the work topic
    STORE = "store"                  # a finished task: artifact, cache entry, breaker feed
    DECIDE_FAILURE = "decide_failure"  # a failed attempt: retry, or dead-letter
    ARM_TIMER = "arm_timer"          # a scheduled retry: fire a TaskReady when due
    DEAD_LETTER = "dead_letter"      # a dead task: DLQ record and PM escalation
    PLAN_DONE = "plan_done"          # every file done: the PlanCompleted summary
    REDRIVE = "redrive"              # a valid redrive request: revive the dead task
    INTEGRATE = "integrate"          # every file verified: plan the test shards
    SEND_SHARDS = "send_shards"      # a planned run: its shards onto the test work topic
    RECORD_TESTS = "record_tests"    # a shard's result: durations for the next balance


@dataclass(frozen=True)
class Command:
    """One thing to do. `fresh` is False when the event had already been applied (a
    redelivery after a crash): idempotent effects run anyway, once-only ones do not."""

    kind: Cmd
    plan_id: str
    task_id: str | None = None
    fresh: bool = True
    data: dict[str, Any] | None = None


def decision_id(*parts: object) -> str:
    """A deterministic event id for a decision, so a decision made twice is one event."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]
