"""`devline replay --verify`: re-derive the processor's decisions from a plan's events and
compare them with the decisions on the log.

The processor's decisions are events it wrote itself, each a function of the state the
events before it left (`agents.scheduling.fold`) and the code that decides:

- priorities, levels and critical path in `PlanAccepted`: `agents.scheduling.priority` on
  the plan's graph and costs;
- `TaskRetryScheduled` / `TaskDeadLettered` after a failure (retry, fix task, escalation):
  `agents.scheduling.decisions.decide_failure` on the task's replayed state;
- the `TaskRetryScheduled` of a redrive: a request the fold accepted for a dead task;
- `TaskReady` of a retry timer / an expired lease: the task waiting at that attempt and
  due by then / dispatched with that dispatch id;
- `TaskCompleted` from the cache: a released task (ready, first attempt, not a fix);
- `PlanCompleted`: the counters the fold holds when the plan is done;
- `IntegrationStarted`: a run for the round and scope the fold is testing, named by its
  own assignment (`integration.run_id`), each test in one shard, the totals adding up, and
  a re-run of failed tests running exactly the tests that failed. Which tests a full round
  finds and how they are balanced depend on files and durations in the artifact store,
  so they are taken as given;
- the fix tasks for files that failing integration tests point at: `decide_failure`, as
  for any failure (the fold reopens them when the last shard reports).

Inputs from other processes (results, dispatches, requests) are taken as given. A
duplicate of a decision (the same event id again, written after a crash) is not a
divergence; nor is a decision the fold refuses because the task moved on meanwhile (a
lease that expired just as the result came in). Dispatch order is reported, not judged:
the dispatcher sees a ready task one board read after the fold, so it may pick a
lower-ranked one first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import networkx as nx

from agents.replay.events import PlanEvent
from agents.scheduling import fold as F
from agents.scheduling import integration as I
from agents.scheduling.decisions import decide_failure, failure_policy, redrive_id
from agents.scheduling.dispatch import KIND_RANK
from agents.scheduling.model import Cmd, decision_id
from agents.scheduling.priority import bottom_levels, critical_path, topological_levels

EPS = 1e-9


@dataclass(frozen=True)
class Divergence:
    """The first event whose content differs from what replay derives at that point."""

    seq: int
    offset: int
    event_type: str
    task_id: str | None
    what: str
    cause_seq: int | None = None  # the event the decision answers (a failure, a request)


@dataclass
class Verification:
    plan_id: str | None
    events: int
    first: Divergence | None = None
    checked: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    refused: int = 0      # decisions the fold did not take (the task had moved on)
    dispatches: int = 0
    out_of_rank: int = 0  # dispatches taken while a higher-ranked task was ready

    @property
    def agree(self) -> bool:
        return self.first is None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["agree"] = self.agree
        return out


@dataclass
class _Expected:
    event_type: str
    record: dict[str, Any]
    cause: int


class _Verifier:
    def __init__(self, max_attempts: int, no_progress_repeats: int) -> None:
        self.policy = failure_policy(max_attempts)
        self.repeats = no_progress_repeats
        self.state = F.PlanState()
        self.expected: dict[tuple[str, int], _Expected] = {}  # (task, failed attempt)
        self.redrives: dict[str, int] = {}  # task -> seq of the request the fold accepted
        self.seen: set[str] = set()
        self.cause: int | None = None  # the event the decision being checked answers

    def check(self, ev: PlanEvent, result: Verification) -> str | None:
        """Why the event is not what the processor would have written here, or None."""
        et, v = ev.event_type, ev.value or {}
        eid = str(v.get("event_id") or "")
        if eid and eid in self.seen and et != "PlanAccepted":
            result.duplicates += 1
            return None
        if eid:
            self.seen.add(eid)
        task = self.state.task(str(v.get("task_id") or "")) if self.state.header else None
        kind = {"PlanAccepted": "priorities", "TaskRetryScheduled": "retry",
                "TaskDeadLettered": "dead_letter", "TaskReady": "ready",
                "PlanCompleted": "plan_completed",
                "IntegrationStarted": "integration"}.get(str(et))
        if et == "TaskCompleted" and v.get("cached"):
            kind = "cache_hit"
        if kind is None:
            if et == "TaskDispatched":
                self._rank(v, task, result)
            return None
        result.checked[kind] = result.checked.get(kind, 0) + 1
        match kind:
            case "priorities":
                return priorities_problem(v)
            case "retry" if str(v.get("reason") or "").startswith(F.REDRIVE):
                return self._redrive(v, task, result)
            case "retry" | "dead_letter":
                return self._decision(str(et), v, task, result)
            case "ready":
                return self._ready(v, task, result)
            case "cache_hit":
                return self._cached(v, task, result)
            case "integration":
                return self._integration(v, result)
            case _:
                return self._plan_completed(v, result)

    def _decision(self, et: str, v: dict[str, Any], task: Any, result: Verification
                  ) -> str | None:
        failed_attempt = int(v["attempt"]) - 1 if et == "TaskRetryScheduled" \
            else int(v["attempts"])
        want = self.expected.pop((v["task_id"], failed_attempt), None)
        if want is None:
            if task is not None and task["status"] in (F.DONE, F.DEAD, F.RETRY_WAIT):
                result.refused += 1  # decided once already, or the task moved on
                return None
            return (f"{et} for attempt {failed_attempt} of {v['task_id']}, which had no "
                    "failure to decide")
        self.cause = want.cause
        if want.event_type != et:
            return (f"{et} on the log; the processor decides {want.event_type} "
                    f"({want.record.get('reason')})")
        for key, value in want.record.items():
            if v.get(key) != value:
                return f"{key}: log has {v.get(key)!r}, replay derives {value!r}"
        return None

    def _redrive(self, v: dict[str, Any], task: Any, result: Verification) -> str | None:
        requested = self.redrives.pop(v["task_id"], None)
        if requested is None:
            if task is not None and task["status"] != F.DEAD:
                result.refused += 1
                return None
            return f"a redrive of {v['task_id']} nobody requested"
        self.cause = requested
        want = redrive_id(self.state.header["plan_id"], v["task_id"], int(v["attempt"]))
        if task is None or int(v["attempt"]) != int(task["attempt"]) + 1 or \
                v.get("event_id") != want:
            return (f"redrive as attempt {v['attempt']}; replay derives attempt "
                    f"{int(task['attempt']) + 1 if task else '?'}")
        return None

    def _ready(self, v: dict[str, Any], task: Any, result: Verification) -> str | None:
        plan_id, tid, attempt = self.state.header.get("plan_id"), v["task_id"], v["attempt"]
        if task is None:
            return f"TaskReady for {tid}, not a task of the plan"
        if v.get("event_id") == decision_id(plan_id, tid, attempt, "due"):
            if task["status"] != F.RETRY_WAIT or task["attempt"] != attempt:
                return (f"a retry timer fired for attempt {attempt} of {tid}, which is "
                        f"{task['status']} at attempt {task['attempt']}")
            if v.get("kind") != task["kind"]:
                return f"kind: log has {v.get('kind')!r}, replay derives {task['kind']!r}"
            if int(v.get("ready_at") or 0) < int(task["due_at"] or 0):
                return (f"fired at {v.get('ready_at')}, before the retry was due "
                        f"({task['due_at']})")
            return None
        if task["status"] != F.DISPATCHED or task["attempt"] != attempt:
            result.refused += 1  # a lease that expired as the result came in
            return None
        if v.get("event_id") != decision_id(plan_id, tid, attempt, "lease",
                                            task["dispatch_id"]):
            return (f"TaskReady for {tid} that is neither its retry coming due nor the "
                    f"lease of its dispatch {task['dispatch_id']} expiring")
        return None

    def _cached(self, v: dict[str, Any], task: Any, result: Verification) -> str | None:
        if task is None:
            return f"a cache hit for {v['task_id']}, not a task of the plan"
        if task["status"] != F.READY:
            result.refused += 1
            return None
        if task["attempt"] != 1 or task["kind"] != "dev" or int(v["attempt"]) != 1:
            return (f"a cache hit for {v['task_id']} at attempt {v['attempt']} "
                    f"({task['kind']}): only a first dev attempt is looked up")
        return None

    def _plan_completed(self, v: dict[str, Any], result: Verification) -> str | None:
        h = self.state.header
        if h.get("reported"):
            result.refused += 1
            return None
        if h.get("status") != F.PLAN_DONE:
            return f"PlanCompleted while the plan is {h.get('status')}"
        want = {"files": h["total"], "executor_runs": h["executor_runs"],
                "cache_hits": h["cache_hits"], "failed": h.get("dead", 0),
                "makespan_ms": max((h["completed_at"] or 0) - h["accepted_at"], 0)}
        if h.get("completed_at"):
            want["completed_at"] = h["completed_at"]
        for key, value in want.items():
            if v.get(key) != value:
                return f"{key}: log has {v.get(key)!r}, replay derives {value!r}"
        return None

    def _integration(self, v: dict[str, Any], result: Verification) -> str | None:
        h = self.state.header
        integ = h.get("integration") or {}
        if integ.get("run_id") is not None and integ.get("round") == v.get("round"):
            result.refused += 1  # a second assignment for a planned round: the fold keeps one
            return None
        if h.get("status") != I.TESTING or not integ:
            return f"an integration run while the plan is {h.get('status')}"
        return integration_problem(h["plan_id"], integ, v)

    def _rank(self, v: dict[str, Any], task: Any, result: Verification) -> None:
        if task is None or task["status"] != F.READY or task["attempt"] != v.get("attempt"):
            return
        result.dispatches += 1

        def rank(t: Any) -> tuple[int, float]:
            return KIND_RANK.get(t["kind"], 1), -float(t["spec"]["priority"])
        mine = rank(task)
        if any(o["status"] == F.READY and o["spec"]["executor"] == task["spec"]["executor"]
               and rank(o) < mine for o in self.state.tasks.values()):
            result.out_of_rank += 1

    def after(self, ev: PlanEvent, commands: list[Any]) -> None:
        """Expectations the folded event leaves: failures to decide, redrives to carry out."""
        h = self.state.header
        for cmd in commands:
            if cmd.kind == Cmd.DECIDE_FAILURE and cmd.task_id:
                task = self.state.task(cmd.task_id)
                decision = decide_failure(h["plan_id"], h.get("options") or {}, task,
                                          self.policy, self.repeats) if task else None
                if decision is not None and task is not None:
                    attempt = int((task["last_failure"] or {}).get("attempt") or 0)
                    self.expected.setdefault((cmd.task_id, attempt), _Expected(
                        decision.event_type, decision.record, ev.seq))
            elif cmd.kind == Cmd.REDRIVE and cmd.task_id:
                self.redrives.setdefault(cmd.task_id, ev.seq)


def integration_problem(plan_id: str, integ: dict[str, Any], v: dict[str, Any]
                        ) -> str | None:
    """What in an `IntegrationStarted` the testing plan's state (`integ`) contradicts."""
    if v.get("round") != integ.get("round") or v.get("scope") != (integ.get("scope") or "full"):
        return (f"round {v.get('round')} ({v.get('scope')}); replay is testing round "
                f"{integ.get('round')} ({integ.get('scope')})")
    shards = list(v.get("shards") or [])
    run = I.run_id(plan_id, int(v["round"]), shards)
    if v.get("run_id") != run:
        return f"run_id: log has {v.get('run_id')!r}, its shards name {run!r}"
    if v.get("event_id") != decision_id(plan_id, v["round"], run, "integration"):
        return "event_id is not the run's decision id"
    if sorted(int(s["index"]) for s in shards) != list(range(len(shards))):
        return "shards are not numbered 0..n-1"
    tests = [t for s in shards for t in s["tests"]]
    if len(set(tests)) != len(tests):
        return "a test is in two shards"
    if int(v.get("tests_total") or 0) != len(tests):
        return f"tests_total: log has {v.get('tests_total')}, the shards hold {len(tests)}"
    if integ.get("scope") == "failed" and integ.get("failed_tests") and \
            sorted(tests) != sorted(integ["failed_tests"]):
        return (f"a re-run of failed tests runs {sorted(tests)}; replay derives "
                f"{sorted(integ['failed_tests'])}")
    return None


def priorities_problem(v: dict[str, Any]) -> str | None:
    """Re-derive the planner's priorities, levels and critical path from the accepted
    plan's graph and costs; say what differs."""
    tasks = v.get("tasks") or []
    graph = nx.DiGraph()
    graph.add_nodes_from(t["task_id"] for t in tasks)
    graph.add_edges_from((t["task_id"], d) for t in tasks for d in t["depends_on"])
    costs = {t["task_id"]: float(t["cost"]) for t in tasks}
    try:
        levels = topological_levels(graph)
        bottom = bottom_levels(graph, costs)
        path = critical_path(graph, costs)
    except nx.NetworkXUnfeasible:
        return "the accepted plan's dependencies form a cycle"
    level_of = {t: i for i, level in enumerate(levels) for t in level}
    for t in tasks:
        if abs(float(t["priority"]) - bottom[t["task_id"]]) > EPS:
            return (f"priority of {t['task_id']}: log has {t['priority']}, replay derives "
                    f"{bottom[t['task_id']]}")
        if int(t["level"]) != level_of[t["task_id"]]:
            return (f"level of {t['task_id']}: log has {t['level']}, replay derives "
                    f"{level_of[t['task_id']]}")
    if list(v.get("critical_path") or []) != path:
        return f"critical path: log has {v.get('critical_path')}, replay derives {path}"
    if [sorted(level) for level in v.get("levels") or []] != levels:
        return "levels differ from the plan's graph"
    return None


def verify(events: Sequence[PlanEvent], *, max_attempts: int = 3,
           no_progress_repeats: int = 3) -> Verification:
    """Replay the plan's events, checking each decision before folding it; stop at the
    first that differs from what replay derives."""
    v = _Verifier(max_attempts, no_progress_repeats)
    plan_id = next((e.value.get("plan_id") for e in events if e.value), None)
    result = Verification(plan_id, len(events))
    for ev in events:
        if ev.event_type is None or ev.value is None or ev.event_type == "PlanRetired":
            continue
        v.cause = None
        if ev.event_type == "PlanAccepted" or v.state.header:
            problem = v.check(ev, result)
            if problem is not None:
                result.first = Divergence(ev.seq, ev.offset, ev.event_type,
                                          ev.value.get("task_id"), problem, v.cause)
                return result
        commands = F.apply(v.state, ev.event_type, ev.value, ev.offset)
        v.after(ev, commands)
    return result
