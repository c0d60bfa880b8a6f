"""Plans produced straight to devline.plans (any producer, no CLI) meet the same rules:
every plan the pipeline cannot carry out gets a PlanRejected naming the problem, and a
plan id is accepted once."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from agents.planning import plan_record, submission_digest
from devline.settings import Settings
from streams import topics as T
from streams.client import produce
from tests.harness import plan_events, running_pipeline, wait_for


def raw_plan(plan_id: str, **changes: Any) -> dict[str, Any]:
    """A PlanSubmitted as another producer might write it: nothing the CLI would shape."""
    record = plan_record({"plan_id": plan_id, "project": "raw", "name": plan_id,
                          "files": [{"path": "a.py", "content": "A = 1\n"}]})
    file_changes = changes.pop("file", {})
    record["files"][0].update(file_changes)
    record.update(changes)
    return record


def send(settings: Settings, record: dict[str, Any]) -> None:
    asyncio.run(produce(settings, T.PLANS, "PlanSubmitted", record, key=record["plan_id"]))


BAD = {
    "escaping-project": ({"project": "../../escaped"}, "project"),
    "absolute-project": ({"project": "/etc"}, "is absolute"),
    "unknown-executor": ({"file": {"executor": "command"}}, "not configured on this cluster"),
    "unknown-default-executor": ({"options": {"executor": "http"}},
                                 "not configured on this cluster"),
    "negative-cost": ({"file": {"cost": -3.0}}, "files[0].cost"),
    "nan-cost": ({"file": {"cost": math.nan}}, "files[0].cost"),
    "forever-demo": ({"file": {"simulate": {"duration_s": 1e308, "fail_first": 0,
                                            "fail_error": "x", "retryable": True}}},
                     "simulate.duration_s"),
}


def test_every_plan_the_pipeline_cannot_carry_out_is_rejected_with_the_reason(
        topics: Settings) -> None:
    settings = topics
    with running_pipeline(settings, workers=1):
        for plan_id, (changes, _) in BAD.items():
            send(settings, raw_plan(plan_id, **changes))
        good = raw_plan("good")
        send(settings, good)
        verdicts = {pid: wait_for(settings, pid, {"PlanAccepted", "PlanRejected"}, 60)
                    for pid in [*BAD, "good"]}
        wait_for(settings, "good", {"PlanCompleted"}, 60)
    for plan_id, (_, reason) in BAD.items():
        kind, ev = verdicts[plan_id]
        assert kind == "PlanRejected", plan_id
        assert reason in ev["reason"], (plan_id, ev["reason"])
    assert verdicts["good"][0] == "PlanAccepted"


def test_a_plan_id_is_accepted_once(topics: Settings) -> None:
    settings = topics
    first = raw_plan("same-id")
    other = raw_plan("same-id", file={"content": "A = 2\n"})
    with running_pipeline(settings, workers=1):
        send(settings, first)
        wait_for(settings, "same-id", {"PlanCompleted"}, 60)
        send(settings, first)  # the same plan again: nothing to do
        send(settings, other)  # other content under the id: refused
        _, rejected = wait_for(settings, "same-id", {"PlanRejected"}, 60)
        evs = plan_events(settings, "same-id")
    assert "already accepted for other content" in rejected["reason"]
    assert rejected["digest"] == submission_digest(other)
    kinds = [et for _, et, _ in evs]
    assert kinds.count("PlanAccepted") == 1 and kinds.count("PlanCompleted") == 1
    assert kinds.count("TaskCompleted") == 1
