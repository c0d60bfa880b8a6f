"""Plan a fork: a new plan that starts from a source plan's state at a sequence number.

The fork point snaps back to the last completion at or before the requested `seq` (a
task's output is either kept whole or run again). Every file finished by then is kept
through a *journal*: one entry per task with the attempt that produced it, its input hash
(the result-cache key: task spec, executor identity, dependency outputs) and its output's
hash. The fork's processor completes a task from the journal, with no executor call, only
when the task's input hash in the fork is the same; a task whose dependency was run again
with a different output runs again too. Everything else (unfinished, in flight at the fork
point, or named with `--rerun`) runs with the fork's executor. The fork never reads the
result cache: what it re-runs it really runs. Pure: the caller reads the log, fetches
briefs and stores the journal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agents.replay.events import PlanEvent, lineage_hash
from agents.replay.state import ReplayError, completion_boundary, replay
from agents.scheduling import fold as F

# Plan options a fork does not inherit: rolling the source out again is not the fork's job.
NOT_INHERITED = ("rollout",)


@dataclass(frozen=True)
class ForkPlan:
    source: str
    plan_id: str
    at: int            # the seq asked for
    boundary: int      # the completion it snapped back to
    lineage: str       # sha256 of the source's events up to the boundary
    journal: dict[str, Any]
    rerun: list[str]   # paths that run in the fork
    submission: dict[str, Any]  # the plan document to submit (`agents.planning.plan_record`)

    def journal_blob(self) -> bytes:
        return json.dumps(self.journal, sort_keys=True, separators=(",", ":")).encode()


def _accepted(events: Sequence[PlanEvent], upto: int | None = None) -> PlanEvent | None:
    found = None
    for ev in events:
        if upto is not None and ev.seq > upto:
            break
        if ev.event_type == "PlanAccepted":
            found = ev
    return found


def plan_fork(events: Sequence[PlanEvent], at_seq: int, *, executor: str | None = None,
              rerun: Collection[str] = (), new_id: str | None = None,
              project: str | None = None, force: bool = False,
              briefs: Mapping[str, tuple[str, str | None]] | None = None) -> ForkPlan:
    """The fork of the plan whose events are `events` at `at_seq`; ReplayError when it
    cannot be made (no such seq, the plan not accepted by then, an unknown --rerun path,
    the file list changed since and not `force`, a brief the store does not have)."""
    if not events:
        raise ReplayError("the plan has no events")
    if not 1 <= at_seq <= events[-1].seq:
        raise ReplayError(f"--at {at_seq}: the plan's events are numbered 1-{events[-1].seq}")
    boundary = completion_boundary(events, at_seq)
    state = replay(events, to_seq=boundary).state
    accepted = _accepted(events, boundary)
    if accepted is None or accepted.value is None or state.header.get("status") == F.REJECTED:
        raise ReplayError(f"the plan is not accepted at seq {boundary}")
    source = str(accepted.value["plan_id"])
    specs = list(accepted.value["tasks"])
    paths = [t["path"] for t in specs]
    latest = _accepted(events)
    if latest is not None and latest.value is not None and not force:
        now = [t["path"] for t in latest.value["tasks"]]
        if sorted(now) != sorted(paths):
            added, removed = sorted(set(now) - set(paths)), sorted(set(paths) - set(now))
            raise ReplayError(
                f"plan {source}'s file list changed after seq {boundary} (accepted again at "
                f"seq {latest.seq}: {len(added)} added {added[:3]}, {len(removed)} removed "
                f"{removed[:3]}); --force forks the files as they were at seq {boundary}")
    unknown = sorted(set(rerun) - set(paths))
    if unknown:
        raise ReplayError(f"--rerun {unknown[0]!r}: not a file of plan {source}")
    kept: dict[str, Any] = {}
    for spec in specs:
        task = state.task(spec["task_id"])
        if (task is not None and task["status"] == F.DONE and task["content_hash"]
                and task["cache_key"] and spec["path"] not in rerun):
            kept[spec["task_id"]] = {"attempt": int(task["attempt"]),
                                     "input": task["cache_key"],
                                     "content_hash": task["content_hash"],
                                     "size": int(task["size"] or 0), "path": spec["path"]}
    lineage = lineage_hash(e for e in events if e.seq <= boundary)
    params = json.dumps([executor, sorted(rerun), lineage, boundary]).encode()
    plan_id = new_id or f"{source[:96]}.fork{boundary}-{hashlib.sha256(params).hexdigest()[:6]}"
    files = [_file(spec, None if spec["task_id"] in kept else executor, briefs or {})
             for spec in specs]
    h = state.header
    options = {k: v for k, v in (h.get("options") or {}).items()
               if not k.startswith(NOT_INHERITED)}
    journal = {"source": source, "seq": boundary, "lineage": lineage, "tasks": kept}
    options.update({"fork.source": source, "fork.seq": str(boundary), "fork.at": str(at_seq),
                    "fork.hash": lineage})
    submission = {"plan_id": plan_id, "project": project or f"{h['project']}-{plan_id}",
                  "name": f"{h.get('name') or source} (fork of {source} at {boundary})",
                  "files": files, "options": options}
    kept_paths = {k["path"] for k in kept.values()}
    return ForkPlan(source, plan_id, at_seq, boundary, lineage, journal,
                    sorted(p for p in paths if p not in kept_paths), submission)


def _file(spec: dict[str, Any], executor: str | None,
          briefs: Mapping[str, tuple[str, str | None]]) -> dict[str, Any]:
    description, content = spec.get("description") or "", spec.get("content")
    if spec.get("brief"):
        if spec["brief"] not in briefs:
            raise ReplayError(f"the brief of {spec['path']} ({spec['brief'][:12]}) is not in "
                              "the artifact store")
        description, content = briefs[spec["brief"]]
    out: dict[str, Any] = {"path": spec["path"], "description": description,
                           "depends_on": list(spec["depends_on"]), "cost": spec["cost"],
                           "executor": executor or spec["executor"]}
    for key in ("language", "content", "simulate"):
        value = content if key == "content" else spec.get(key)
        if value is not None:
            out[key] = value
    return out
