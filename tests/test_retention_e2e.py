"""Retention on the real broker: a finished plan leaves the live tables (tombstones in the
changelogs) after DEVLINE_PLAN_RETENTION_S, stays in the log's history, and a restarted
processor does not bring it back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from devline.settings import Settings
from streams.client import replay
from tests.harness import (
    plan_events,
    raw_records,
    running_pipeline,
    submit,
    wait_for,
    wait_for_processor,
)
from tests.test_pipeline_e2e import changelog_state


def test_a_finished_plan_is_retired_from_the_tables_but_not_from_history(
        topics: Settings, tmp_path: Path) -> None:
    settings = topics.updated(plan_retention_s=2.0)
    files = [{"path": "a.py", "content": "A = 1\n"},
             {"path": "b.py", "content": "from a import A\nB = A\n"}]
    with running_pipeline(settings, workers=1, log=tmp_path / "run.log"):
        plan_id = submit(settings, {"project": "ret", "name": "retired", "files": files})
        wait_for(settings, plan_id, {"PlanCompleted"}, 60)
        kind, retired = wait_for(settings, plan_id, {"PlanRetired"}, 30)
        assert kind == "PlanRetired" and retired["status"] == "done"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            live = changelog_state(settings)
            if plan_id not in live["plans"]:
                break
            time.sleep(0.5)
    assert plan_id not in live["plans"]
    assert not [k for k in live["tasks"] if k.startswith(f"{plan_id}/")]
    tombstones = {r.key for r in raw_records(settings, "devline-streams-tasks-changelog")
                  if r.value is None}
    assert len(tombstones) == 2  # one per task record

    history = asyncio.run(replay(settings, plan_id))[plan_id]
    assert history.header["status"] == "done" and history.header["retired_at"]
    assert [et for _, et, _ in plan_events(settings, plan_id)].count("PlanRetired") == 1

    restarted = int(time.time() * 1000)
    with running_pipeline(settings, workers=1, log=tmp_path / "run2.log"):  # a restart
        # Submitted once the processor consumes: a plan produced while no processor ran,
        # on a partition the group never committed, can be missed (README: limits).
        wait_for_processor(settings, restarted)
        other = submit(settings, {"project": "ret", "name": "after", "files": files[:1]})
        wait_for(settings, other, {"PlanCompleted"}, 90)
        time.sleep(1)
        assert plan_id not in changelog_state(settings)["plans"]
