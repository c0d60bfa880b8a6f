"""A failed canary gets fix tasks, end to end on the real broker (`devline run --rollouts`).

v1 of a small package is rolled out healthy and becomes the stable revision. v2 changes one
file, and the simulated service fails half of v2's requests: the canary is rolled back at
its first step, the changed file (only it) goes back to the fix loop with the analysis as
evidence, the plan completes again and its fixed revision `v2-fix1` is rolled out to 100%.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from devline.settings import Settings
from streams import topics as T
from streams.rollout.log import fold_plan
from tests.harness import ROOT, events, plan_events, running_pipeline, submit, wait_for

ROLLOUT = {"rollout.steps": "50,100", "rollout.bake_s": "2", "rollout.interval_s": "1",
           "rollout.deadline_s": "30", "rollout.sim.rps": "100"}
OPS_V1 = "def add(a, b):\n    return a + b\n"
OPS_V2 = "def add(a, b):\n    return b + a  # v2: operands swapped\n"


def plan(revision: str, ops: str, options: dict[str, str]) -> dict[str, Any]:
    files = [("calc/__init__.py", ""), ("calc/ops.py", ops),
             ("calc/text.py", "def shout(s):\n    return s.upper()\n")]
    return {"project": "canary", "name": f"canary {revision}",
            "options": {"executor": "demo", "qa": "syntax", **ROLLOUT,
                        "rollout.revision": revision, **options},
            "files": [{"path": p, "content": c, "depends_on": [],
                       "simulate": {"duration_s": 0.05}} for p, c in files]}


def rollout_state(settings: Settings, plan_id: str, check: Any, timeout: float = 60.0
                  ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state, _, _ = asyncio.run(fold_plan(settings, plan_id, idle_timeout=0.3))
        if check(state):
            return state
        time.sleep(0.5)
    raise AssertionError(f"{plan_id}: rollout state\n{json.dumps(state, indent=1)[:3000]}")


def test_a_failed_canary_fixes_the_changed_file_and_rolls_out_the_fix(
        topics: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = topics
    monkeypatch.setenv("DEVLINE_ROLLOUT_CONFIG", str(ROOT / "examples" / "rollout.yaml"))
    with running_pipeline(settings, workers=2, extra=["--rollouts"]):
        v1 = submit(settings, plan("v1", OPS_V1, {}))
        assert wait_for(settings, v1, {"PlanCompleted", "PlanRejected"})[0] == "PlanCompleted"
        stable = rollout_state(settings, v1, lambda s: s["phase"] == "succeeded")
        assert stable["revision"] == "v1"

        v2 = submit(settings, plan("v2", OPS_V2, {"rollout.stable_revision": "v1",
                                                  "rollout.sim.v2.error_rate": "0.5"}))
        kind, request = wait_for(settings, v2, {"RolloutFixRequested", "PlanRejected"},
                                 timeout=120)
        assert kind == "RolloutFixRequested", request
        fixed = rollout_state(settings, v2, lambda s: s["revision"] == "v2-fix1"
                              and s["phase"] == "succeeded", timeout=120)
        evs = plan_events(settings, v2)
        work = [v for _, k, v in events(settings, T.WORK_DEV) if k == "WorkItem"
                and v["plan_id"] == v2 and v["kind"] == "fix"]

    # Only the file that differs from v1 is blamed, with the analysis that failed.
    assert request["paths"] == ["calc/ops.py"]
    assert (request["revision"], request["stable_revision"]) == ("v2", "v1")
    assert "error_rate" in request["reason"]
    evidence = json.loads(request["evidence"])
    assert evidence["percent"] == 50 and evidence["analysis"]["error_rate"]["last"][-1][
        "value"] > 0.05
    # It became a fix task carrying that evidence; nothing else ran again.
    fixes = [v for _, k, v in evs if k == "TaskRetryScheduled" and v.get("kind") == "fix"]
    assert [v["path"] for v in fixes] == ["calc/ops.py"]
    assert len(work) == 1 and work[0]["path"] == "calc/ops.py"
    assert work[0]["fix"]["check"] == "canary analysis"
    assert "rolled back" in work[0]["fix"]["output"] and "error_rate" in work[0]["fix"]["output"]
    # The plan completed twice: as v2, and after the fix; the fixed revision went to 100%.
    assert [k for _, k, _ in evs].count("PlanCompleted") == 2
    assert fixed["stable_revision"] == "v2-fix1" or fixed["revision"] == "v2-fix1"
    history = [h["why"] for h in fixed["history"]]
    assert any("rolling back" in w for w in history)  # v2 first
    assert history[-1].startswith("succeeded")
