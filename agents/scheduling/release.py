"""When dependents may start, and when they must run again. Pure: no Kafka.

By default a file's dependents start when it is *verified* (its checks passed). With the
plan option `release: written` they start as soon as a first version is written, even one
that fails its checks and goes to the fix loop: speculative, so the critical path does
not wait for fixes. The version they were built against is remembered by its interface
hash (signatures and exports). When the verified version arrives:

- same interface (the usual case: a fix repairs a body, not a signature): nothing to do,
  the dependents' work stands, so the speculation cost nothing;
- another interface: every dependent that already ran (done) or is running (dispatched)
  runs again against the new version, as a new attempt with a fresh retry budget.

The same rule covers a verified file reopened by a failing integration test: if its fix
changes the interface, the dependents built on the old one run again. A dependent that
re-runs may change its own interface in turn; its dependents follow the same rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.scheduling.model import Cmd, Command

if TYPE_CHECKING:
    from agents.scheduling.fold import PlanState

RELEASES = ("verified", "written")


def speculative(options: dict[str, str]) -> bool:
    return options.get("release", "verified") == "written"


def written(task: Any, ev: dict[str, Any], seq: int, options: dict[str, str]) -> None:
    """A first version that failed its checks: with `release: written` it is what the
    dependents start against (counted for them once, by this event)."""
    if not speculative(options) or task.get("counted_seq") is not None:
        return
    task["counted_seq"] = seq
    task["content_hash"] = ev.get("content_hash")
    task["size"] = int(ev.get("size") or 0)
    task["built_iface"] = ev.get("interface_hash")


def before_done(task: Any, ev: dict[str, Any], seq: int) -> None:
    """Bookkeeping as the task becomes done: whether this event counts it for its
    dependents, and which interface they were built against before (if any)."""
    task["prior_iface"] = task.get("built_iface")
    if task.get("counted_seq") is None:
        task["counted_seq"] = seq
    task["built_iface"] = ev.get("interface_hash")


def dependents_to_rerun(state: PlanState, task: Any, seq: int) -> list[tuple[str, str]]:
    """(dependent id, its status before) of the dependents this completion sends back to
    run again: the interface they were built against changed. Derived from state alone,
    so a redelivered event finds the same list (including those it already reset)."""
    prior, now = task.get("prior_iface"), task.get("built_iface")
    if not prior or not now or prior == now:
        return []
    out = []
    for dep_id in task["dependents"]:
        d = state.task(dep_id)
        if d is None:
            continue
        if d.get("rerun_seq") == seq:
            out.append((dep_id, str(d.get("rerun_from"))))
        elif int(d.get("seq", -1)) < seq and d["status"] in ("done", "dispatched"):
            out.append((dep_id, str(d["status"])))
    return out


def apply_reruns(state: PlanState, reruns: list[tuple[str, str]], seq: int, fresh: bool
                 ) -> list[Command]:
    """Send the dependents back: a done one is ready again (next attempt); a running one
    is marked, and its result will be taken as a request to run again."""
    commands = []
    for dep_id, before in reruns:
        d = state.task(dep_id)
        if d is None:
            continue
        if int(d.get("seq", -1)) < seq:
            d["rerun_seq"], d["rerun_from"] = seq, before
            if before == "done":
                rerun(d, seq)
            else:
                d["stale_seq"] = seq
                d["seq"] = seq
            state.tasks[dep_id] = d
        if d["status"] == "ready":
            commands.append(Command(Cmd.RELEASE, state.header["plan_id"], dep_id, fresh=fresh))
    return commands


def stale_result(task: Any, seq: int) -> bool:
    """A result of a run that started before one of its dependencies changed interface."""
    return (task.get("stale_seq") is not None and task["status"] == "dispatched"
            and int(task.get("seq", -1)) < seq)


def rerun(task: Any, seq: int) -> None:
    """The task runs again as its next attempt (a fresh budget: it did nothing wrong)."""
    task.update({"status": "ready", "attempt": int(task["attempt"]) + 1, "kind": "dev",
                 "dispatch_id": None, "stale_seq": None, "seq": seq})
    task["attempt_base"] = int(task["attempt"]) - 1
